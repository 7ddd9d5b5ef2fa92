"""Activation recomputation: keep fewer activations in forward, recompute them in backward.

Chen et al., "Training Deep Nets with Sublinear Memory Cost", arXiv:1604.06174 (full
recomputation: keep only each block's input); Korthikanti et al., "Reducing Activation
Recomputation in Large Transformer Models", arXiv:2205.05198 (selective: recompute only the
attention core, whose activations are large — 5·a·s²·b bytes per layer — and cheap to redo).
:func:`saved_activation_bytes` measures what autograd keeps for backward, so the memory saving
is measured, not assumed. Taught in chapter 04 (solutions/04_parallel).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint


class Recomputed(nn.Module):
    """Run ``module`` under ``torch.utils.checkpoint``: only its inputs are kept for backward."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, *args):
        if not torch.is_grad_enabled():
            return self.module(*args)
        return checkpoint(self.module, *args, use_reentrant=False)


def recompute_blocks(model: nn.Module, policy: str = "full") -> nn.Module:
    """Apply a recomputation ``policy`` to a GPT's blocks in place: ``"full"`` (each block) or
    ``"selective"`` (each block's attention core only). Returns the model."""
    if policy not in ("full", "selective"):
        raise ValueError(f"policy must be 'full' or 'selective', got {policy!r}")
    for i, block in enumerate(model.blocks):
        if policy == "full":
            model.blocks[i] = Recomputed(block)
        else:
            block.attn.attend = functools.partial(checkpoint, block.attn.attend,
                                                  use_reentrant=False)
    return model


def saved_activation_bytes(fn: Callable[[], torch.Tensor],
                           exclude: tuple[torch.Tensor, ...] = ()) -> int:
    """Bytes of the distinct tensors autograd saves while ``fn()`` runs its forward (parameters
    in ``exclude`` do not count: they exist anyway)."""
    skip = {t.untyped_storage().data_ptr() for t in exclude}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        ptr = t.untyped_storage().data_ptr()
        if ptr not in skip:
            seen[ptr] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(seen.values())
