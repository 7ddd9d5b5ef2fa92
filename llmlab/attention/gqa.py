"""Grouped-query attention: MHA, MQA and GQA are one computation parameterised by KV heads.

``n_head`` query heads share ``n_kv_head`` key/value heads in groups of ``n_head // n_kv_head``
("GQA: Training Generalized Multi-Query Transformer Models from Multi-Head Checkpoints",
arXiv 2305.13245; MQA: "Fast Transformer Decoding: One Write-Head is All You Need",
arXiv 1911.02150). ``n_kv_head == n_head`` is MHA, ``n_kv_head == 1`` is MQA.

Two forms: :func:`repeat_kv` + naive attention (readable: copy each KV head to its group), and
:func:`grouped_attention`, which folds the group into the query's sequence axis so the KV heads
are never copied. The layer the book's model uses is ``llmlab.nn``'s ``CausalSelfAttention``;
it is re-exported by :mod:`llmlab.attention`. Taught in chapter 03 (solutions/03_attention).
"""

from __future__ import annotations

import torch
from einops import rearrange

from llmlab.attention.naive import naive_attention
from llmlab.nn.attention import attention_mask, attention_scores, check_qkv
from llmlab.nn.functional import softmax


def repeat_kv(x: torch.Tensor, n_rep: int) -> torch.Tensor:
    """Copy each KV head ``n_rep`` times.

    x: (batch, n_kv_head, seq, d) -> (batch, n_kv_head * n_rep, seq, d).

    Head ``h`` of the result is KV head ``h // n_rep`` (groups are contiguous, as in Llama).
    """
    if x.dim() != 4:
        raise ValueError(f"repeat_kv expects (batch, n_kv_head, seq, d), got {tuple(x.shape)}")
    if n_rep < 1:
        raise ValueError(f"n_rep must be >= 1, got {n_rep}")
    return x.repeat_interleave(n_rep, dim=1)


def gqa_reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                  mask: torch.Tensor | None = None, causal: bool = False,
                  scale: float | None = None) -> torch.Tensor:
    """GQA by expansion: repeat KV heads to the query heads, then naive attention.

    q: (batch, n_head, seq_q, d), k/v: (batch, n_kv_head, seq_k, d) -> (batch, n_head, seq_q, d).
    """
    check_qkv(q, k, v)
    n_rep = q.shape[1] // k.shape[1]
    return naive_attention(q, repeat_kv(k, n_rep), repeat_kv(v, n_rep), mask, causal, scale)


def grouped_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                      mask: torch.Tensor | None = None, causal: bool = False,
                      scale: float | None = None) -> torch.Tensor:
    """GQA without copying KV: each group's queries attend to their one KV head together.

    q: (batch, n_head, seq_q, d), k/v: (batch, n_kv_head, seq_k, d) -> (batch, n_head, seq_q, d).
    ``mask`` broadcasts to (batch, 1 or n_head, seq_q, seq_k). The group axis joins the query
    axis, so the score matmul reads each KV head once — what memory-bound decoding kernels do.
    """
    check_qkv(q, k, v)
    n_kv, seq_q, seq_k = k.shape[1], q.shape[-2], k.shape[-2]
    qg = rearrange(q, "b (g r) q d -> b g (r q) d", g=n_kv)  # (batch, n_kv, n_rep*seq_q, d)
    scores = attention_scores(qg, k, scale=scale)  # (batch, n_kv, n_rep*seq_q, seq_k), fp32
    scores = rearrange(scores, "b g (r q) k -> b (g r) q k", q=seq_q)
    mask = attention_mask(mask, causal, seq_q, seq_k, q.device)  # the one mask convention
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    probs = rearrange(softmax(scores, -1), "b (g r) q k -> b g (r q) k", g=n_kv)
    out = torch.einsum("bgqk,bgkd->bgqd", probs, v.to(probs.dtype)).to(v.dtype)
    return rearrange(out, "b g (r q) d -> b (g r) q d", q=seq_q)
