"""Naive scaled dot-product attention: the reference every faster form is tested against.

``softmax(q k^T / sqrt(d) + bias) v`` with the full ``(seq_q, seq_k)`` score matrix in memory
("Attention Is All You Need", arXiv 1706.03762). Readable and O(seq^2) in memory — the cost
FlashAttention removes. Taught in chapter 03 (solutions/03_attention).
"""

from __future__ import annotations

import math

import torch

from llmlab.attention.masks import causal_mask
from llmlab.nn.functional import softmax  # an all-masked row gives zeros, not NaN


def check_qkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, same_heads: bool = False) -> None:
    """Raise ValueError unless q, k, v are ``(batch, heads, seq, d)`` with compatible sizes."""
    if q.dim() != 4 or k.dim() != 4 or v.dim() != 4:
        raise ValueError("q, k, v must be 4-d (batch, heads, seq, d_head); got shapes "
                         f"{tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    if k.shape[:3] != v.shape[:3] or q.shape[0] != k.shape[0] or q.shape[-1] != k.shape[-1]:
        raise ValueError(f"incompatible q {tuple(q.shape)}, k {tuple(k.shape)}, "
                         f"v {tuple(v.shape)}: need the same batch, k/v the same heads and "
                         "seq, q/k the same d_head")
    if same_heads and q.shape[1] != k.shape[1]:
        raise ValueError(f"q has {q.shape[1]} heads but k/v have {k.shape[1]}; expand grouped "
                         "KV heads with repeat_kv first")
    if q.shape[1] % k.shape[1]:
        raise ValueError(f"q heads ({q.shape[1]}) must be a multiple of kv heads ({k.shape[1]})")


def attention_scores(q: torch.Tensor, k: torch.Tensor, mask: torch.Tensor | None = None,
                     causal: bool = False, scale: float | None = None,
                     bias: torch.Tensor | None = None) -> torch.Tensor:
    """Masked, scaled logits ``(batch, heads, seq_q, seq_k)`` (masked entries are -inf)."""
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    scores = torch.einsum("bhqd,bhkd->bhqk", q, k) * scale
    if bias is not None:
        scores = scores + bias
    if causal:
        mask = causal_mask(q.shape[-2], k.shape[-2], q.device) if mask is None else \
            mask & causal_mask(q.shape[-2], k.shape[-2], q.device)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return scores


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
    out = torch.einsum("bhqk,bhkd->bhqd", probs, v)
    return (out, probs) if return_probs else out
