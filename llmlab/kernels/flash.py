"""FlashAttention-2 in Triton: the tile loop of chapter 03, one program per query tile.

Forward (FlashAttention-2 Algorithm 1, "FlashAttention-2: Faster Attention with Better
Parallelism and Work Partitioning", Dao, arXiv 2307.08691): program ``(i, b*h)`` loads its query
tile once, walks the key/value tiles with the online-softmax update (running max ``m``, running sum
``l``, unnormalised accumulator), and writes the output tile and ``lse = m + log l``. Backward
(Algorithm 2) by recomputation ``P = exp(S - lse)``: one kernel per key tile accumulates ``dK, dV``
over the query tiles, one per query tile accumulates ``dQ`` — no atomics. Scores and statistics
are fp32 in both passes (``tl.dot`` accumulates in fp32 even for bf16 inputs).

Same contract as :func:`llmlab.attention.flash_attention`: q (batch, n_head, t_q, d),
k, v (batch, n_kv_head, t_k, d) — grouped KV heads are read in place, query head ``h`` reads KV head
``h // (n_head // n_kv_head)`` — and ``causal`` aligned bottom-right. Taught in chapter 03
(solutions/03_attention), whose exercise writes the forward's tile loop.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from llmlab.attention.flash import FlashAttentionFunction
from llmlab.nn.attention import check_qkv


@triton.jit
def flash_fwd_kernel(Q, K, V, O, LSE, scale, t_q, t_k, H, GROUP, D,
                     sqb, sqh, sqt, skb, skh, skt, CAUSAL: tl.constexpr,
                     BLOCK_Q: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_D: tl.constexpr):
    """Program (i, b*H + h): output rows [i*BLOCK_Q, (i+1)*BLOCK_Q) of head h of batch b.

    Q, O: (B, H, t_q, D) with strides (sqb, sqh, sqt, 1); K, V: (B, H/GROUP, t_k, D) with strides
    (skb, skh, skt, 1); LSE: (B, H, t_q) fp32 contiguous.
    """
    i, bh = tl.program_id(0), tl.program_id(1)
    b, h = bh // H, bh % H
    rows = i * BLOCK_Q + tl.arange(0, BLOCK_Q)  # query positions of this tile
    dims = tl.arange(0, BLOCK_D)
    q = tl.load(Q + b * sqb + h * sqh + rows[:, None] * sqt + dims[None, :],
                mask=(rows[:, None] < t_q) & (dims[None, :] < D), other=0.0)
    kv = K + b * skb + (h // GROUP) * skh  # this head's K (V has the same layout)
    vv = V + b * skb + (h // GROUP) * skh
    offset = t_k - t_q  # query row r sits at absolute position r + offset
    m = tl.full([BLOCK_Q], -float("inf"), tl.float32)
    l = tl.zeros([BLOCK_Q], tl.float32)
    acc = tl.zeros([BLOCK_Q, BLOCK_D], tl.float32)
    hi = t_k
    if CAUSAL:  # key tiles past the last query of this tile are all masked
        hi = tl.minimum(t_k, (i + 1) * BLOCK_Q + offset)
    for start in range(0, hi, BLOCK_K):
        cols = start + tl.arange(0, BLOCK_K)
        kv_mask = (cols[:, None] < t_k) & (dims[None, :] < D)
        k = tl.load(kv + cols[:, None] * skt + dims[None, :], mask=kv_mask, other=0.0)
        v = tl.load(vv + cols[:, None] * skt + dims[None, :], mask=kv_mask, other=0.0)
        s = tl.dot(q, tl.trans(k)) * scale  # (BLOCK_Q, BLOCK_K) fp32
        visible = cols[None, :] < t_k
        if CAUSAL:
            visible = visible & (cols[None, :] <= rows[:, None] + offset)
        s = tl.where(visible, s, -float("inf"))
        m_new = tl.maximum(m, tl.max(s, axis=1))
        shift = tl.where(m_new == -float("inf"), 0.0, m_new)  # a row with nothing visible yet
        alpha = tl.exp(m - shift)
        p = tl.exp(s - shift[:, None])
        l = l * alpha + tl.sum(p, axis=1)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)
        m = m_new
    out = acc / tl.where(l == 0.0, 1.0, l)[:, None]
    tl.store(O + b * sqb + h * sqh + rows[:, None] * sqt + dims[None, :],
             out.to(O.dtype.element_ty), mask=(rows[:, None] < t_q) & (dims[None, :] < D))
    tl.store(LSE + bh * t_q + rows, m + tl.log(l), mask=rows < t_q)


@triton.jit
def _scores_back(q, k, do, v, lse, delta, rows, cols, t_q, t_k, offset, scale,
                 CAUSAL: tl.constexpr):
    """Recompute P = exp(S - lse) of one (query tile, key tile) and dS = P * (dP - D)."""
    p = tl.exp(tl.dot(q, tl.trans(k)) * scale - lse[:, None])
    visible = (rows[:, None] < t_q) & (cols[None, :] < t_k)
    if CAUSAL:
        visible = visible & (cols[None, :] <= rows[:, None] + offset)
    p = tl.where(visible, p, 0.0)
    ds = p * (tl.dot(do, tl.trans(v)) - delta[:, None])
    return p, ds


@triton.jit
def _load_rows(Q, DO, LSE, DELTA, rows, dims, b, h, bh, t_q, D, sqb, sqh, sqt):
    """The query-side tiles of the backward: q, dO (rows, D) and lse, D (rows,)."""
    q_mask = (rows[:, None] < t_q) & (dims[None, :] < D)
    base_q = b * sqb + h * sqh + rows[:, None] * sqt + dims[None, :]
    q = tl.load(Q + base_q, mask=q_mask, other=0.0)
    do = tl.load(DO + base_q, mask=q_mask, other=0.0)
    lse = tl.load(LSE + bh * t_q + rows, mask=rows < t_q, other=0.0)
    delta = tl.load(DELTA + bh * t_q + rows, mask=rows < t_q, other=0.0)
    return q, do, lse, delta


@triton.jit
def _flash_bwd_dkdv(Q, K, V, DO, LSE, DELTA, DK, DV, scale, t_q, t_k, H, GROUP, D,
                    sqb, sqh, sqt, skb, skh, skt, CAUSAL: tl.constexpr,
                    BLOCK_Q: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_D: tl.constexpr):
    """Program (j, b*H + h): dK, dV of key tile j as seen by query head h (DK, DV are per query
    head, (B, H, t_k, D) contiguous; grouped heads are summed afterwards)."""
    j, bh = tl.program_id(0), tl.program_id(1)
    b, h = bh // H, bh % H
    cols = j * BLOCK_K + tl.arange(0, BLOCK_K)
    dims = tl.arange(0, BLOCK_D)
    kv_mask = (cols[:, None] < t_k) & (dims[None, :] < D)
    base_kv = b * skb + (h // GROUP) * skh + cols[:, None] * skt + dims[None, :]
    k = tl.load(K + base_kv, mask=kv_mask, other=0.0)
    v = tl.load(V + base_kv, mask=kv_mask, other=0.0)
    dk = tl.zeros([BLOCK_K, BLOCK_D], tl.float32)
    dv = tl.zeros([BLOCK_K, BLOCK_D], tl.float32)
    offset = t_k - t_q
    lo = 0
    if CAUSAL:  # query tiles before the first that sees this key tile contribute nothing
        lo = tl.maximum(0, j * BLOCK_K - offset) // BLOCK_Q * BLOCK_Q
    for start in range(lo, t_q, BLOCK_Q):
        rows = start + tl.arange(0, BLOCK_Q)
        q, do, lse, delta = _load_rows(Q, DO, LSE, DELTA, rows, dims, b, h, bh, t_q, D,
                                       sqb, sqh, sqt)
        p, ds = _scores_back(q, k, do, v, lse, delta, rows, cols, t_q, t_k, offset, scale, CAUSAL)
        dv += tl.dot(tl.trans(p).to(do.dtype), do)
        dk += tl.dot(tl.trans(ds).to(q.dtype), q) * scale
    out = (bh * t_k + cols[:, None]) * D + dims[None, :]
    tl.store(DK + out, dk.to(DK.dtype.element_ty), mask=kv_mask)
    tl.store(DV + out, dv.to(DV.dtype.element_ty), mask=kv_mask)


@triton.jit
def _flash_bwd_dq(Q, K, V, DO, LSE, DELTA, DQ, scale, t_q, t_k, H, GROUP, D,
                  sqb, sqh, sqt, skb, skh, skt, CAUSAL: tl.constexpr,
                  BLOCK_Q: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_D: tl.constexpr):
    """Program (i, b*H + h): dQ of query tile i, summed over the key tiles it sees."""
    i, bh = tl.program_id(0), tl.program_id(1)
    b, h = bh // H, bh % H
    rows = i * BLOCK_Q + tl.arange(0, BLOCK_Q)
    dims = tl.arange(0, BLOCK_D)
    q, do, lse, delta = _load_rows(Q, DO, LSE, DELTA, rows, dims, b, h, bh, t_q, D, sqb, sqh, sqt)
    dq = tl.zeros([BLOCK_Q, BLOCK_D], tl.float32)
    offset = t_k - t_q
    hi = t_k
    if CAUSAL:
        hi = tl.minimum(t_k, (i + 1) * BLOCK_Q + offset)
    for start in range(0, hi, BLOCK_K):
        cols = start + tl.arange(0, BLOCK_K)
        kv_mask = (cols[:, None] < t_k) & (dims[None, :] < D)
        base_kv = b * skb + (h // GROUP) * skh + cols[:, None] * skt + dims[None, :]
        k = tl.load(K + base_kv, mask=kv_mask, other=0.0)
        v = tl.load(V + base_kv, mask=kv_mask, other=0.0)
        p, ds = _scores_back(q, k, do, v, lse, delta, rows, cols, t_q, t_k, offset, scale, CAUSAL)
        dq += tl.dot(ds.to(k.dtype), k) * scale
    tl.store(DQ + b * sqb + h * sqh + rows[:, None] * sqt + dims[None, :],
             dq.to(DQ.dtype.element_ty), mask=(rows[:, None] < t_q) & (dims[None, :] < D))


def _launch_args(q: torch.Tensor, k: torch.Tensor, causal: bool, scale: float | None,
                 block_q: int, block_k: int) -> tuple:
    b, h, t_q, d = q.shape
    scale = 1.0 / math.sqrt(d) if scale is None else scale
    meta = dict(CAUSAL=causal, BLOCK_Q=block_q, BLOCK_K=block_k,
                BLOCK_D=max(16, triton.next_power_of_2(d)))
    shape = (scale, t_q, k.shape[2], h, h // k.shape[1], d, *q.stride()[:3], *k.stride()[:3])
    return shape, meta


def _check(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool, block_q: int,
           block_k: int) -> None:
    check_qkv(q, k, v)
    if v.shape[-1] != q.shape[-1]:
        raise ValueError(f"the Triton kernel needs d_v == d_head, got {v.shape[-1]} and "
                         f"{q.shape[-1]}")
    if causal and q.shape[2] > k.shape[2]:
        raise ValueError(f"causal attention needs t_q <= t_k, got {q.shape[2]} > {k.shape[2]}")
    for name, bsz in (("block_q", block_q), ("block_k", block_k)):
        if bsz < 16 or bsz & (bsz - 1):
            raise ValueError(f"{name} must be a power of two >= 16 (tl.dot tiles), got {bsz}")


def flash_attention_forward(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                            causal: bool = False, scale: float | None = None,
                            block_q: int = 64, block_k: int = 64, kernel=None
                            ) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward only: ``(o, lse)`` as :func:`llmlab.attention.flash_attention_forward` returns them.

    q: (batch, n_head, t_q, d), k, v: (batch, n_kv_head, t_k, d) -> o (batch, n_head, t_q, d),
    lse (batch, n_head, t_q) fp32. ``kernel`` replaces :func:`flash_fwd_kernel` (same signature;
    chapter 03's exercise passes the learner's).
    """
    _check(q, k, v, causal, block_q, block_k)
    q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
    o = torch.empty_like(q)
    lse = torch.empty(q.shape[:3], dtype=torch.float32, device=q.device)
    args, meta = _launch_args(q, k, causal, scale, block_q, block_k)
    grid = (triton.cdiv(q.shape[2], block_q), q.shape[0] * q.shape[1])
    (kernel or flash_fwd_kernel)[grid](q, k, v, o, lse, *args, **meta)
    return o, lse


def flash_attention_backward(do: torch.Tensor, q: torch.Tensor, k: torch.Tensor,
                             v: torch.Tensor, o: torch.Tensor, lse: torch.Tensor,
                             causal: bool = False, scale: float | None = None,
                             block_q: int = 64, block_k: int = 64
                             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Backward kernels: ``dq, dk, dv`` from the forward's ``o`` and ``lse`` (contiguous inputs);
    the signature of :func:`llmlab.attention.flash_attention_backward`."""
    do = do.contiguous()
    delta = (do.float() * o.float()).sum(-1)  # D = rowsum(dO * O): (batch, n_head, t_q)
    b, h, t_q, d = q.shape
    per_head = (b, h, k.shape[2], d)  # dK, dV per query head, summed over groups below
    dq = torch.empty_like(q)
    dk = torch.empty(per_head, dtype=k.dtype, device=k.device)
    dv = torch.empty(per_head, dtype=v.dtype, device=v.device)
    args, meta = _launch_args(q, k, causal, scale, block_q, block_k)
    _flash_bwd_dkdv[(triton.cdiv(k.shape[2], block_k), b * h)](
        q, k, v, do, lse, delta, dk, dv, *args, **meta)
    _flash_bwd_dq[(triton.cdiv(t_q, block_q), b * h)](
        q, k, v, do, lse, delta, dq, *args, **meta)
    group = h // k.shape[1]
    if group > 1:
        dk = dk.view(b, k.shape[1], group, k.shape[2], d).sum(2)
        dv = dv.view(b, k.shape[1], group, k.shape[2], d).sum(2)
    return dq, dk, dv


def flash_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool = False,
                    scale: float | None = None, block_q: int = 64,
                    block_k: int = 64) -> torch.Tensor:
    """Exact attention, differentiable, O(t) extra memory.

    q: (batch, n_head, t_q, d), k, v: (batch, n_kv_head, t_k, d) -> (batch, n_head, t_q, d);
    equal to :func:`llmlab.nn.attention` (``is_causal=causal``).
    """
    _check(q, k, v, causal, block_q, block_k)
    q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
    return FlashAttentionFunction.apply(q, k, v, causal, scale, block_q, block_k,
                                        (flash_attention_forward, flash_attention_backward))
