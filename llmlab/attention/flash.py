"""FlashAttention in pure PyTorch: tiled forward with online softmax, backward by recomputation.

The forward walks key/value tiles for each query tile, keeping the online-softmax statistics
(running max ``m``, running sum ``l``) and an unnormalised output accumulator, so the
``(seq_q, seq_k)`` score matrix never exists in memory. It saves only the output and the
log-sum-exp ``L = m + log l`` per query row; the backward recomputes each tile's probabilities
as ``P = exp(S - L)`` ("FlashAttention: Fast and Memory-Efficient Exact Attention with
IO-Awareness", arXiv 2205.14135; loop order and ``D = rowsum(dO * O)`` from "FlashAttention-2",
arXiv 2307.08691). On a CPU the win is memory, not speed: Python loops over tiles are slower
than one fused matmul. Scores, statistics and the accumulator are fp32 for fp16/bf16 inputs in
both passes, so the backward's ``P = exp(S - L)`` uses the very scores ``L`` came from.
The Triton kernel of :mod:`llmlab.kernels.flash` runs the same tile loop on a GPU.
Taught in chapter 03 (solutions/03_attention).
"""

from __future__ import annotations

import math

import torch

from llmlab.attention.online_softmax import online_softmax_step
from llmlab.nn.attention import accumulation_dtype, check_qkv


def tile_mask(q_start: int, q_end: int, k_start: int, k_end: int, offset: int,
              device: torch.device) -> torch.Tensor | None:
    """Causal mask of one tile ``(q_end-q_start, k_end-k_start)``, or None when all visible.

    Query row ``i`` is at absolute position ``i + offset`` (bottom-right alignment).
    """
    if k_end - 1 <= q_start + offset:
        return None
    q_pos = torch.arange(q_start, q_end, device=device)[:, None] + offset
    k_pos = torch.arange(k_start, k_end, device=device)[None, :]
    return k_pos <= q_pos


def flash_attention_forward(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                            causal: bool = False, scale: float | None = None,
                            block_q: int = 64, block_k: int = 64
                            ) -> tuple[torch.Tensor, torch.Tensor]:
    """Tiled attention forward (FlashAttention-2 Algorithm 1).

    q: (batch, heads, seq_q, d), k: (batch, heads, seq_k, d), v: (batch, heads, seq_k, d_v).
    Returns ``o`` (batch, heads, seq_q, d_v) and ``lse`` (batch, heads, seq_q), the log-sum-exp
    of each query's scaled scores — all the backward needs besides q, k, v and o.
    """
    check_qkv(q, k, v, same_heads=True)
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    seq_q, seq_k = q.shape[-2], k.shape[-2]
    if causal and seq_q > seq_k:
        raise ValueError(f"causal attention needs seq_q <= seq_k, got {seq_q} > {seq_k}")
    offset = seq_k - seq_q
    acc_t = accumulation_dtype(q.dtype)
    o = torch.empty(*q.shape[:-1], v.shape[-1], dtype=q.dtype, device=q.device)
    lse = torch.empty(q.shape[:-1], dtype=acc_t, device=q.device)
    for qs in range(0, seq_q, block_q):
        qe = min(qs + block_q, seq_q)
        q_tile = q[..., qs:qe, :].to(acc_t)  # (batch, heads, bq, d), fp32 like the backward
        m = torch.full(q_tile.shape[:-1], float("-inf"), dtype=acc_t, device=q.device)
        l = torch.zeros(q_tile.shape[:-1], dtype=acc_t, device=q.device)
        acc = torch.zeros(*q_tile.shape[:-1], v.shape[-1], dtype=acc_t, device=q.device)
        k_stop = min(seq_k, qe + offset) if causal else seq_k  # later tiles are all masked
        for ks in range(0, k_stop, block_k):
            ke = min(ks + block_k, seq_k)
            k_tile = k[..., ks:ke, :].to(acc_t)
            s = (q_tile @ k_tile.transpose(-1, -2)) * scale  # (batch, heads, bq, bk), fp32
            mask = tile_mask(qs, qe, ks, ke, offset, q.device) if causal else None
            if mask is not None:
                s = s.masked_fill(~mask, float("-inf"))
            m, l, p, alpha = online_softmax_step(m, l, s)  # p: (batch, heads, bq, bk)
            acc = alpha[..., None] * acc + p @ v[..., ks:ke, :].to(acc_t)
        o[..., qs:qe, :] = (acc / l[..., None]).to(q.dtype)
        lse[..., qs:qe] = m + torch.log(l)
    return o, lse


def flash_attention_backward(do: torch.Tensor, q: torch.Tensor, k: torch.Tensor,
                             v: torch.Tensor, o: torch.Tensor, lse: torch.Tensor,
                             causal: bool = False, scale: float | None = None,
                             block_q: int = 64, block_k: int = 64
                             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Backward by recomputation (FlashAttention-2 Algorithm 2): returns ``dq, dk, dv``.

    For each KV tile (outer loop) and query tile (inner loop): ``P = exp(S - L)``,
    ``dV += P^T dO``, ``dP = dO V^T``, ``dS = P * (dP - D)`` with ``D = rowsum(dO * O)``,
    ``dQ += dS K * scale``, ``dK += dS^T Q * scale``. Shapes as in the forward.
    """
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    seq_q, seq_k = q.shape[-2], k.shape[-2]
    offset = seq_k - seq_q
    acc_t = lse.dtype
    delta = (do.to(acc_t) * o.to(acc_t)).sum(-1)  # D: (batch, heads, seq_q)
    dq = torch.zeros(q.shape, dtype=acc_t, device=q.device)
    dk = torch.empty(k.shape, dtype=k.dtype, device=k.device)
    dv = torch.empty(v.shape, dtype=v.dtype, device=v.device)
    for ks in range(0, seq_k, block_k):
        ke = min(ks + block_k, seq_k)
        k_tile, v_tile = k[..., ks:ke, :].to(acc_t), v[..., ks:ke, :].to(acc_t)
        dk_tile, dv_tile = torch.zeros_like(k_tile), torch.zeros_like(v_tile)
        q_first = max(0, ks - offset) // block_q * block_q if causal else 0
        for qs in range(q_first, seq_q, block_q):
            qe = min(qs + block_q, seq_q)
            q_tile, do_tile = q[..., qs:qe, :].to(acc_t), do[..., qs:qe, :].to(acc_t)
            s = (q_tile @ k_tile.transpose(-1, -2)) * scale  # (batch, heads, bq, bk)
            p = torch.exp(s - lse[..., qs:qe, None])
            mask = tile_mask(qs, qe, ks, ke, offset, q.device) if causal else None
            if mask is not None:
                p = p.masked_fill(~mask, 0.0)
            dv_tile += p.transpose(-1, -2) @ do_tile
            dp = do_tile @ v_tile.transpose(-1, -2)
            ds = p * (dp - delta[..., qs:qe, None])
            dq[..., qs:qe, :] += ds @ k_tile * scale
            dk_tile += ds.transpose(-1, -2) @ q_tile * scale
        dk[..., ks:ke, :], dv[..., ks:ke, :] = dk_tile, dv_tile
    return dq.to(q.dtype), dk, dv


class FlashAttentionFunction(torch.autograd.Function):
    """Autograd glue: the forward saves q, k, v, o and the log-sum-exp — never the probabilities.

    ``passes`` is the ``(forward, backward)`` pair with the signatures of
    :func:`flash_attention_forward` / :func:`flash_attention_backward` (default: those two; the
    Triton kernels of :mod:`llmlab.kernels.flash` pass theirs)."""

    @staticmethod
    def forward(ctx, q, k, v, causal, scale, block_q, block_k, passes=None):  # type: ignore[override]
        fwd, ctx.backward_pass = passes or (flash_attention_forward, flash_attention_backward)
        o, lse = fwd(q, k, v, causal, scale, block_q, block_k)
        ctx.save_for_backward(q, k, v, o, lse)
        ctx.config = (causal, scale, block_q, block_k)
        return o

    @staticmethod
    def backward(ctx, do):  # type: ignore[override]
        q, k, v, o, lse = ctx.saved_tensors
        dq, dk, dv = ctx.backward_pass(do, q, k, v, o, lse, *ctx.config)
        return dq, dk, dv, None, None, None, None, None


def flash_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool = False,
                    scale: float | None = None, block_q: int = 64,
                    block_k: int = 64) -> torch.Tensor:
    """Exact attention with O(seq) extra memory, differentiable.

    q: (batch, heads, seq_q, d), k: (batch, heads, seq_k, d), v: (batch, heads, seq_k, d_v)
    -> (batch, heads, seq_q, d_v); ``causal`` is aligned bottom-right.
    """
    if block_q < 1 or block_k < 1:
        raise ValueError(f"block sizes must be >= 1, got block_q={block_q}, block_k={block_k}")
    return FlashAttentionFunction.apply(q, k, v, causal, scale, block_q, block_k)
