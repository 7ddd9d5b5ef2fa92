"""Decode-time attention: one new query per sequence against its cached keys and values.

:func:`decode_attention` is one cached attention step on contiguous tensors. :func:`paged_attention`
computes the same thing without ever gathering a sequence into contiguous memory: it walks each
sequence's block table one block at a time and merges the blocks with the online-softmax
rescaling ("Online normalizer calculation for softmax", arXiv 1805.02867) — the algorithm of
vLLM's PagedAttention kernel ("Efficient Memory Management for Large Language Model Serving with
PagedAttention", arXiv 2309.06180), written for reading, not speed. The model itself gathers
through the block table (:meth:`llmlab.kvcache.PagedKVCache.update`) and calls PyTorch's fused
attention. Taught in chapter 08 (solutions/08_kvcache).
"""

from __future__ import annotations

import math

import torch
from einops import rearrange

from llmlab.attention.online_softmax import online_softmax_step
from llmlab.nn.attention import attention


def _check(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, where: str) -> None:
    """Layout check of the decode form; everything else is :func:`llmlab.nn.check_qkv`'s."""
    if q.dim() != 3 or k.dim() != 4 or k.shape != v.shape:
        raise ValueError(f"{where}: expected q (batch, n_head, d) and k, v (.., .., n_kv_head, d); "
                         f"got q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}")
    if q.shape[1] % k.shape[2] or q.shape[2] != k.shape[3]:
        raise ValueError(f"{where}: n_head {q.shape[1]} must be a multiple of n_kv_head "
                         f"{k.shape[2]} and d must match ({q.shape[2]} vs {k.shape[3]})")


def decode_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                     lengths: torch.Tensor | None = None) -> torch.Tensor:
    """softmax(q K^T / sqrt(d)) V for one new query per row, grouped KV heads.

    q: (batch, n_head, d); k, v: (batch, T, n_kv_head, d) — the cache *including* the new
    token; lengths: (batch,) valid keys per row (the rest is padding), default all T.
    -> (batch, n_head, d). Query head h reads KV head h // (n_head // n_kv_head). This is
    :func:`llmlab.nn.attention` (the one reference) in the cache's layout.
    """
    _check(q, k, v, "decode_attention")
    mask = None
    if lengths is not None:
        valid = torch.arange(k.shape[1], device=k.device)[None] < lengths[:, None]  # (batch, T)
        mask = valid[:, None, None, :]  # (batch, 1, 1, T)
    out = attention(q[:, :, None], k.transpose(1, 2), v.transpose(1, 2), mask)
    return out[:, :, 0]


def paged_attention(q: torch.Tensor, k_blocks: torch.Tensor, v_blocks: torch.Tensor,
                    block_tables: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Decode attention read block by block through block tables (no contiguous copy).

    q: (batch, n_head, d); k_blocks, v_blocks: (num_blocks, block_size, n_kv_head, d) pools;
    block_tables: (batch, max_blocks) block ids; lengths: (batch,) tokens per sequence.
    -> (batch, n_head, d), equal to :func:`decode_attention` on the gathered sequences. Blocks
    are merged with the one online-softmax step of :mod:`llmlab.attention.online_softmax`.
    """
    _check(q, k_blocks, v_blocks, "paged_attention")
    batch, n_head, d = q.shape
    block_size, n_kv = k_blocks.shape[1], k_blocks.shape[2]
    qg = rearrange(q, "b (g r) d -> b g r d", g=n_kv).float() / math.sqrt(d)
    # running max of the scores, running sum of exp(score - m), running sum of exp(score - m) v
    m = torch.full((batch, n_kv, n_head // n_kv), float("-inf"), device=q.device)
    s = torch.zeros_like(m)
    acc = torch.zeros(batch, n_kv, n_head // n_kv, d, device=q.device)
    for j in range(block_tables.shape[1]):
        slot = j * block_size + torch.arange(block_size, device=q.device)
        valid = slot < lengths[:, None]  # (batch, block_size)
        if not valid.any():
            break
        kb = k_blocks[block_tables[:, j]].float()  # (batch, block_size, n_kv, d)
        vb = v_blocks[block_tables[:, j]].float()
        scores = torch.einsum("bgrd,btgd->bgrt", qg, kb)
        scores = scores.masked_fill(~valid[:, None, None, :], float("-inf"))
        m, s, p, alpha = online_softmax_step(m, s, scores)
        acc = acc * alpha[..., None] + torch.einsum("bgrt,btgd->bgrd", p, vb)
    return rearrange(acc / s[..., None], "b g r d -> b (g r) d").to(q.dtype)
