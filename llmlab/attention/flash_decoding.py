"""Flash-decoding: split the KV cache, attend to each split independently, merge by log-sum-exp.

One decoding query has too little work to fill a GPU if the keys are walked in one sequence;
flash-decoding splits the keys into chunks processed in parallel, each returning a partial output
and its log-sum-exp, then rescales and sums them (Dao et al., "Flash-Decoding for long-context
inference", PyTorch blog 2023; the merge is the online-softmax rescaling of arXiv 1805.02867).
Taught in chapter 03 (solutions/03_attention).
"""

from __future__ import annotations

import torch

from llmlab.attention.flash import flash_attention_forward
from llmlab.attention.naive import check_qkv


def merge_partials(outs: torch.Tensor, lses: torch.Tensor) -> torch.Tensor:
    """Merge split results: outs (n_split, ..., d_v), lses (n_split, ...) -> (..., d_v).

    ``out = sum_i exp(lse_i - lse) * out_i`` with ``lse = logsumexp_i lse_i``.
    """
    weights = torch.softmax(lses, dim=0)  # exp(lse_i - logsumexp(lse))
    return (weights[..., None] * outs.to(weights.dtype)).sum(0).to(outs.dtype)


def flash_decode(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, n_splits: int = 4,
                 scale: float | None = None) -> torch.Tensor:
    """Attention of new queries to a whole cache by split-KV.

    q: (batch, heads, seq_q, d) (typically seq_q = 1), k: (batch, heads, seq_k, d),
    v: (batch, heads, seq_k, d_v) -> (batch, heads, seq_q, d_v). No causal mask: every cached
    key precedes the query. The loop over splits is what a GPU runs in parallel.
    """
    check_qkv(q, k, v, same_heads=True)
    if n_splits < 1:
        raise ValueError(f"n_splits must be >= 1, got {n_splits}")
    chunk = -(-k.shape[-2] // n_splits)
    outs, lses = [], []
    for start in range(0, k.shape[-2], chunk):
        ks, vs = k[..., start:start + chunk, :], v[..., start:start + chunk, :]
        o, lse = flash_attention_forward(q, ks, vs, causal=False, scale=scale, block_k=chunk)
        outs.append(o)
        lses.append(lse)
    return merge_partials(torch.stack(outs), torch.stack(lses))
