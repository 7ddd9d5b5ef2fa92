"""``apply_lora``: wrap a model's linear layers with LoRA or DoRA, in place.

The LoRA family shares one configuration (:class:`~llmlab.peft.lora.LoRAConfig`); this file picks
the wrapper it asks for — :class:`~llmlab.peft.lora.LoRALinear` (LoRA, rsLoRA) or, with
``use_dora``, :class:`~llmlab.peft.dora.DoRALinear` — so neither method's file imports the other's.
Taught in chapter 05 (solutions/05_peft).
"""

from __future__ import annotations

from torch import nn

from llmlab.peft.dora import DoRALinear
from llmlab.peft.inject import freeze, replace_modules
from llmlab.peft.lora import LoRAConfig, LoRALinear


def apply_lora(model: nn.Module, config: LoRAConfig | None = None) -> nn.Module:
    """Freeze ``model`` and wrap each linear layer named by ``config.target_modules`` in place.

    With ``config.use_dora`` the wrapper is :class:`DoRALinear`. Returns the model.
    """
    config = config or LoRAConfig()
    freeze(model)
    cls = DoRALinear if config.use_dora else LoRALinear
    replace_modules(model, config.target_modules,
                    lambda _, m: cls(m, config.r, config.alpha, config.dropout, config.use_rslora))
    return model
