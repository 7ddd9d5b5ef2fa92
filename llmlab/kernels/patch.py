"""Swap the Triton kernels into a model: RMSNorm layers and causal self-attention.

``use_kernels(model)`` replaces every :class:`llmlab.nn.RMSNorm` by one computing with
:func:`llmlab.kernels.rms_norm` (same weight) and makes every
:class:`llmlab.nn.CausalSelfAttention` attend with :func:`llmlab.kernels.flash_attention` when no
mask is given (a cache's mask falls back to the fused PyTorch path). The model's code does not
change and does not import this package: the kernels are registered from outside.
Taught in chapter 03 (solutions/03_attention).
"""

from __future__ import annotations

import torch
from torch import nn

from llmlab.kernels.flash import flash_attention
from llmlab.kernels.rmsnorm import rms_norm
from llmlab.nn import CausalSelfAttention, RMSNorm, fast_causal_attention


class TritonRMSNorm(RMSNorm):
    """:class:`llmlab.nn.RMSNorm` through the fused Triton kernel. (..., d) -> (..., d)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rms_norm(x, self.weight, self.eps)


def triton_causal_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                            mask: torch.Tensor | None = None) -> torch.Tensor:
    """``fast_causal_attention``'s contract; the Triton flash kernel when there is no mask and
    d_head is a power of two >= 16."""
    d = q.shape[-1]
    if mask is not None or d < 16 or d & (d - 1) or v.shape[-1] != d:
        return fast_causal_attention(q, k, v, mask)
    block = 64 if q.is_cuda else 16
    return flash_attention(q, k, v, causal=True, block_q=block, block_k=block)


def use_kernels(model: nn.Module) -> nn.Module:
    """Route ``model``'s RMSNorm and causal attention through the Triton kernels, in place."""
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is RMSNorm:
                fused = TritonRMSNorm(child.d, child.eps)
                fused.weight = child.weight  # the same parameter, not a copy
                setattr(parent, name, fused)
            elif isinstance(child, CausalSelfAttention):
                child.attend = triton_causal_attention
    return model
