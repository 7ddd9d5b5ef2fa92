"""Online softmax: one streaming pass for the normaliser, the idea FlashAttention tiles.

Keep a running maximum ``m`` and a running sum ``l`` of ``exp(x - m)``; when a new block raises
the maximum to ``m'``, rescale the old sum by ``exp(m - m')`` ("Online normalizer calculation for
softmax", Milakov & Gimelshein, arXiv 1805.02867). Taught in chapter 03 (solutions/03_attention).
"""

from __future__ import annotations

import torch


def online_logsumexp(x: torch.Tensor, block: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Stream over the last axis in blocks: returns ``(m, l)`` with ``m = max x`` and
    ``l = sum exp(x - m)``, both ``(...)``; ``logsumexp(x) = m + log(l)``.
    """
    if block < 1:
        raise ValueError(f"block must be >= 1, got {block}")
    m = torch.full(x.shape[:-1], float("-inf"), dtype=x.dtype, device=x.device)
    l = torch.zeros(x.shape[:-1], dtype=x.dtype, device=x.device)
    for start in range(0, x.shape[-1], block):
        xb = x[..., start:start + block]  # (..., block)
        m_new = torch.maximum(m, xb.amax(-1))
        shift = m_new.nan_to_num(neginf=0.0)  # a row masked so far: avoid (-inf) - (-inf)
        l = l * torch.exp(m - shift) + torch.exp(xb - shift[..., None]).sum(-1)
        m = m_new
    return m, l


def online_softmax(x: torch.Tensor, block: int = 4) -> torch.Tensor:
    """Softmax over the last axis, with the normaliser computed in one streaming pass.

    x: (..., n) -> (..., n). Equals ``torch.softmax(x, -1)`` for any block size.
    """
    m, l = online_logsumexp(x, block)
    return torch.exp(x - m[..., None]) / l[..., None]
