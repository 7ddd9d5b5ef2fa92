"""Online softmax: one streaming pass for the normaliser, the idea FlashAttention tiles.

Keep a running maximum ``m`` and a running sum ``l`` of ``exp(x - m)``; when a new block raises
the maximum to ``m'``, rescale the old sum by ``exp(m - m')`` ("Online normalizer calculation for
softmax", Milakov & Gimelshein, arXiv 1805.02867). Taught in chapter 03 (solutions/03_attention).
"""

from __future__ import annotations

import torch


def online_softmax_step(m: torch.Tensor, l: torch.Tensor, s: torch.Tensor
                        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The one online-softmax merge, shared by FlashAttention's tile loop, paged attention and
    :func:`online_logsumexp`: fold a new block of scores into the running statistics.

    m, l: (...) running max and running sum of ``exp(x - m)``; s: (..., n) the new block
    (-inf = masked). Returns ``(m', l', p, alpha)`` with ``p = exp(s - m')`` (..., n) and
    ``alpha = exp(m - m')`` (...): a running output accumulator is updated by the caller as
    ``acc' = alpha * acc + p @ v``. Rows masked so far stay finite (m = -inf, l = 0).
    """
    m_new = torch.maximum(m, s.amax(-1))
    shift = m_new.nan_to_num(neginf=0.0)  # a row masked so far: avoid (-inf) - (-inf)
    alpha = torch.exp(m - shift)  # rescales what was accumulated under the old max
    p = torch.exp(s - shift[..., None])
    return m_new, alpha * l + p.sum(-1), p, alpha


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
        m, l, _, _ = online_softmax_step(m, l, xb)
    return m, l


def online_softmax(x: torch.Tensor, block: int = 4) -> torch.Tensor:
    """Softmax over the last axis, with the normaliser computed in one streaming pass.

    x: (..., n) -> (..., n). Equals ``torch.softmax(x, -1)`` for any block size.
    """
    m, l = online_logsumexp(x, block)
    return torch.exp(x - m[..., None]) / l[..., None]
