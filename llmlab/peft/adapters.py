"""Bottleneck adapters: a small residual MLP after a sublayer.

Houlsby et al., "Parameter-Efficient Transfer Learning for NLP", arXiv:1902.00751. After the
attention and the MLP of each block, insert h -> h + W_up act(W_down h) with a bottleneck m << d.
W_up starts at zero, so the adapted model equals the base model at step 0. Unlike LoRA an adapter
cannot be merged: it adds sequential layers, hence latency, at inference.
Taught in chapter 05 (solutions/05_peft).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from llmlab.nn import Linear
from llmlab.peft.inject import freeze, replace_modules


class BottleneckAdapter(nn.Module):
    """h -> h + up(gelu(down(h))).  (..., d) -> (..., d); ``up`` initialised to zero."""

    def __init__(self, d_model: int, bottleneck: int) -> None:
        super().__init__()
        if bottleneck < 1:
            raise ValueError(f"bottleneck must be >= 1, got {bottleneck}")
        self.down = Linear(d_model, bottleneck)
        self.up = Linear(bottleneck, d_model)
        nn.init.zeros_(self.up.weight)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + self.up(F.gelu(self.down(h)))


class AdapterWrapped(nn.Module):
    """Runs ``base`` (any module returning (..., d_model)) then a :class:`BottleneckAdapter`."""

    def __init__(self, base: nn.Module, d_model: int, bottleneck: int) -> None:
        super().__init__()
        self.base, self.adapter = base, BottleneckAdapter(d_model, bottleneck)

    def forward(self, *args, **kwargs) -> torch.Tensor:
        return self.adapter(self.base(*args, **kwargs))


def apply_adapters(model: nn.Module, bottleneck: int = 16,
                   target_modules=(r"blocks\.\d+\.attn", r"blocks\.\d+\.mlp")) -> nn.Module:
    """Freeze a llmlab ``GPT`` and add an adapter after each matching sublayer; return it."""
    d_model = model.config.d_model
    freeze(model)
    replace_modules(model, target_modules, lambda _, m: AdapterWrapped(m, d_model, bottleneck),
                    kinds=None)
    return model
