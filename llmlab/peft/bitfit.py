"""BitFit: train only the bias terms.

Ben Zaken et al., "BitFit: Simple Parameter-efficient Fine-tuning for Transformer-based Masked
Language-models", arXiv:2106.10199. Freeze every weight matrix and train the biases (about 0.1%
of a BERT). Llama-style models have no biases; ``add_missing=True`` gives every linear layer a
zero bias first (the model's function is unchanged at step 0), which is how BitFit is applied
to them. Taught in chapter 05 (solutions/05_peft).
"""

from __future__ import annotations

import torch
from torch import nn

from llmlab.peft.inject import LINEAR_TYPES, freeze, targets


def apply_bitfit(model: nn.Module, target_modules=(r"blocks\..*",), add_missing: bool = True) -> nn.Module:
    """Freeze ``model`` except the biases of the matching linear layers (and norms with a bias).

    add_missing: give bias-free linear layers a zero bias to train. Returns the model.
    """
    freeze(model)
    for name in targets(model, target_modules, LINEAR_TYPES):
        m = model.get_submodule(name)
        if m.bias is None and add_missing:
            w = m.weight
            m.bias = nn.Parameter(torch.zeros(w.shape[0], device=w.device, dtype=w.dtype))
        if m.bias is not None:
            m.bias.requires_grad_(True)
    for name, p in model.named_parameters():
        if name.endswith("bias") and "norm" in name:
            p.requires_grad_(True)
    return model
