"""ALiBi: no position embedding, a per-head linear penalty on distance added to the scores.

"Train Short, Test Long: Attention with Linear Biases Enables Input Length Extrapolation"
(Press et al., arXiv 2108.12409): ``score(i, j) += -m_h * (i - j)`` with head slopes
``m_h = 2^(-8h/n)`` for h = 1..n (n a power of two; otherwise the closest power's slopes plus
every other slope of the next power). Taught in chapter 03 (solutions/03_attention).
"""

from __future__ import annotations

import math

import torch


def alibi_slopes(n_head: int, device: torch.device | None = None) -> torch.Tensor:
    """The paper's geometric slopes, (n_head,) fp32 (BLOOM's ``build_alibi_tensor`` order)."""
    if n_head < 1:
        raise ValueError(f"n_head must be >= 1, got {n_head}")
    closest = 2 ** math.floor(math.log2(n_head))
    slopes = [2 ** (-8 * h / closest) for h in range(1, closest + 1)]
    extra = [2 ** (-4 * h / closest) for h in range(1, 2 * (n_head - closest), 2)]
    return torch.tensor(slopes + extra, dtype=torch.float32, device=device)


def alibi_bias(n_head: int, seq_q: int, seq_k: int | None = None,
               device: torch.device | None = None) -> torch.Tensor:
    """Additive bias (n_head, seq_q, seq_k): ``-m_h * (i - j)`` for keys at or before query i.

    Queries are the last ``seq_q`` of ``seq_k`` positions; future keys get a positive bias
    and must be removed by the causal mask, as usual.
    """
    seq_k = seq_q if seq_k is None else seq_k
    q_pos = torch.arange(seq_k - seq_q, seq_k, device=device)[:, None]
    distance = (q_pos - torch.arange(seq_k, device=device)[None, :]).float()  # (seq_q, seq_k)
    return -alibi_slopes(n_head, device)[:, None, None] * distance
