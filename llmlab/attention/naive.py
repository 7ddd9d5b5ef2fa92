"""Naive scaled dot-product attention: the reference every faster form is tested against.

``softmax(q k^T / sqrt(d) + bias) v`` with the full ``(seq_q, seq_k)`` score matrix in memory
("Attention Is All You Need", arXiv 1706.03762). Readable and O(seq^2) in memory — the cost
FlashAttention removes. It is :func:`llmlab.nn.attention` (the one reference, one mask
convention: bool, True = may attend, ANDed with the bottom-right causal mask when ``causal``)
plus an additive ``bias`` and the probabilities, which chapter 03 plots.
Taught in chapter 03 (solutions/03_attention).
"""

from __future__ import annotations

import torch

from llmlab.nn.attention import attention_scores, check_qkv
from llmlab.nn.functional import softmax  # an all-masked row gives zeros, not NaN

__all__ = ["attention_scores", "check_qkv", "naive_attention"]


def naive_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                    mask: torch.Tensor | None = None, causal: bool = False,
                    scale: float | None = None, bias: torch.Tensor | None = None,
                    return_probs: bool = False):
    """Reference attention.

    q: (batch, heads, seq_q, d), k: (batch, heads, seq_k, d), v: (batch, heads, seq_k, d_v);
    mask: bool broadcastable to (batch, heads, seq_q, seq_k), True = may attend; ``causal`` is
    aligned bottom-right (see :mod:`llmlab.attention.masks`); bias: additive, e.g. ALiBi.
    Returns (batch, heads, seq_q, d_v), and the probabilities too when ``return_probs``. A
    query that may attend to nothing gets a zero output.
    """
    check_qkv(q, k, v, same_heads=True)
    probs = softmax(attention_scores(q, k, mask, causal, scale, bias), dim=-1)
    out = (probs @ v.to(probs.dtype)).to(v.dtype)
    return (out, probs.to(v.dtype)) if return_probs else out
