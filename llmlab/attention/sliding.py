"""Sliding-window attention with attention sinks, computed band by band.

Each query sees its last ``window`` tokens (Mistral 7B, arXiv 2310.06825; Longformer,
arXiv 2004.05150) and the first ``n_sink`` tokens, which StreamingLLM keeps because softmax parks
surplus attention on them ("Efficient Streaming Language Models with Attention Sinks",
arXiv 2309.17453). The reference masks the full score matrix
(:func:`~llmlab.attention.masks.sliding_window_mask`); :func:`sliding_window_attention` only
computes the band — for each query block, the keys of its window and the sinks — so time and
memory grow as ``seq * (window + block + n_sink)`` instead of ``seq^2``.
Taught in chapter 03 (solutions/03_attention).
"""

from __future__ import annotations

import torch

from llmlab.attention.masks import sliding_window_mask, window_visible
from llmlab.attention.naive import check_qkv, naive_attention
from llmlab.nn.context import StepContext, step_positions


def sliding_window_reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, window: int,
                             n_sink: int = 0, scale: float | None = None) -> torch.Tensor:
    """Full score matrix with the sliding-window(+sinks) mask. q, k, v: (batch, heads, seq, d)."""
    mask = sliding_window_mask(q.shape[-2], k.shape[-2], window, n_sink, q.device)
    return naive_attention(q, k, v, mask=mask, scale=scale)


def sliding_window_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, window: int,
                             n_sink: int = 0, block: int = 64,
                             scale: float | None = None) -> torch.Tensor:
    """Band-only sliding-window attention for self-attention (seq_q == seq_k).

    q, k, v: (batch, heads, seq, d) -> (batch, heads, seq, d_v). Query block ``[s, e)`` needs
    keys ``[s - window + 1, e)`` plus the sinks ``[0, n_sink)``; nothing else is computed.
    """
    check_qkv(q, k, v, same_heads=True)
    seq = q.shape[-2]
    if k.shape[-2] != seq:
        raise ValueError(f"band attention is for self-attention; got seq_q={seq}, "
                         f"seq_k={k.shape[-2]}")
    outs = []
    for start in range(0, seq, block):
        end = min(start + block, seq)
        lo = max(0, start - window + 1)
        keys = torch.cat([torch.arange(min(n_sink, lo), device=q.device),
                          torch.arange(lo, end, device=q.device)])
        q_pos = torch.arange(start, end, device=q.device)[:, None]
        mask = window_visible(q_pos, keys[None, :], window, n_sink)  # (end - start, len(keys))
        outs.append(naive_attention(q[..., start:end, :], k[..., keys, :], v[..., keys, :],
                                    mask=mask, scale=scale))
    return torch.cat(outs, dim=-2)


def sliding_window_context(batch: int, t: int, window: int, n_sink: int = 0,
                           device: torch.device | str | None = None) -> StepContext:
    """The step context that makes every layer of a model attend through a sliding window.

    ``model(idx, sliding_window_context(*idx.shape, window, n_sink, idx.device))`` runs one
    full-sequence forward with the (1, 1, t, t) window(+sinks) mask and positions ``0 .. t-1``.
    """
    if window < 1 or n_sink < 0:
        raise ValueError(f"need window >= 1 and n_sink >= 0, got {window}, {n_sink}")
    q_pos = torch.arange(t, device=device)[:, None]
    mask = window_visible(q_pos, q_pos.T, window, n_sink)[None, None]  # (1, 1, t, t)
    return StepContext(step_positions(batch, t, device), mask)
