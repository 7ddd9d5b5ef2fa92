"""Reference answers for chapter 00's warm-up exercises (solutions/00_intro).

Three small tensor idioms every later chapter leans on: a numerically stable softmax, splitting
a model dimension into attention heads with einops, and a mean over the positions a mask keeps.
"""

from __future__ import annotations

import torch
from einops import rearrange


def stable_softmax(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """softmax(x)_i = exp(x_i - max x) / sum_j exp(x_j - max x), along ``dim``.

    Subtracting the max leaves the result unchanged and keeps ``exp`` from overflowing.
    """
    z = x - x.amax(dim=dim, keepdim=True)
    e = z.exp()
    return e / e.sum(dim=dim, keepdim=True)


def split_heads(x: torch.Tensor, n_heads: int) -> torch.Tensor:
    """(batch, seq, n_heads * d_head) -> (batch, n_heads, seq, d_head)."""
    if x.dim() != 3 or x.shape[-1] % n_heads:
        raise ValueError(f"expected (batch, seq, d_model) with d_model divisible by {n_heads}, "
                         f"got {tuple(x.shape)}")
    return rearrange(x, "b s (h d) -> b h s d", h=n_heads)


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of x over the sequence, counting only positions where ``mask`` is True.

    x: (batch, seq, d), mask: (batch, seq) bool -> (batch, d). A row with no kept position
    gives zeros (not NaN).
    """
    m = mask.to(x.dtype).unsqueeze(-1)                    # (batch, seq, 1)
    return (x * m).sum(dim=1) / m.sum(dim=1).clamp_min(1.0)
