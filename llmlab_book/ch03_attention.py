"""Chapter 03 (solutions/03_attention): the catalogue of plausible wrong answers.

Each variant is one slip a learner makes in an otherwise right answer, written as the answer
cell would be (see :mod:`llmlab_book.catalogue` for the format); the chapter's checks name them
and ``tests/platform/test_catalogue.py`` grades every one.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

import llmlab.kernels  # noqa: F401  (chooses Triton's interpreter without a GPU, before any kernel)
from llmlab.attention.flash import flash_attention_backward, flash_attention_forward, tile_mask
from llmlab.nn import rope_frequencies
from llmlab_book.catalogue import Catalogue, Mistake

# ------------------------------------------------------------------ 3.1 predict: MLA's cache


def mla_key_and_value_latents():
    """A latent and a RoPE key for the key and again for the value: twice the cache."""
    return 61 * 2 * (512 + 64) * 2 / 1024


def mla_bytes_not_kib():
    """The count in bytes, not divided by 1,024."""
    return 61 * (512 + 64) * 2


# ------------------------------------------------------------------ 3.2 repeat_kv


def repeat_kv_tiled(x, n_rep):
    """``.repeat``: the heads tiled (0, 1, 0, 1), not interleaved (0, 0, 1, 1)."""
    return x.repeat(1, n_rep, 1, 1)


def repeat_kv_on_positions(x, n_rep):
    """The copies made along the sequence (dim 2), not the heads."""
    return x.repeat_interleave(n_rep, dim=2)


# ------------------------------------------------------------------ 3.3 the sliding-window mask


def window_one_too_wide(seq_q, seq_k, window, n_sink=0):
    """``p - j <= window``: the window counts one key more than it holds."""
    p = torch.arange(seq_k - seq_q, seq_k)[:, None]
    j = torch.arange(seq_k)[None, :]
    return (j <= p) & ((p - j <= window) | (j < n_sink))


def window_without_offset(seq_q, seq_k, window, n_sink=0):
    """Queries placed at 0 .. seq_q - 1, not at the last seq_q of seq_k positions."""
    p = torch.arange(seq_q)[:, None]
    j = torch.arange(seq_k)[None, :]
    return (j <= p) & ((p - j < window) | (j < n_sink))


# ------------------------------------------------------------------ 3.4 online softmax


def online_softmax_sum_not_rescaled(x, block=4):
    """The running sum never rescaled by exp(m_old - m_new) when the maximum grows."""
    m = torch.full(x.shape[:-1], float("-inf"), dtype=x.dtype)
    l = torch.zeros(x.shape[:-1], dtype=x.dtype)
    for start in range(0, x.shape[-1], block):
        xb = x[..., start:start + block]
        m_new = torch.maximum(m, xb.amax(-1))
        l = l + torch.exp(xb - m_new[..., None]).sum(-1)
        m = m_new
    return torch.exp(x - m[..., None]) / l[..., None]


def online_softmax_per_block(x, block=4):
    """Every block normalised on its own: a softmax of each block, not of the row."""
    parts = []
    for start in range(0, x.shape[-1], block):
        e = torch.exp(x[..., start:start + block] - x[..., start:start + block].amax(-1, keepdim=True))
        parts.append(e / e.sum(-1, keepdim=True))
    return torch.cat(parts, -1)


# ------------------------------------------------------------------ 3.5 the flash forward


def _flash_forward(q, k, v, causal, block_q, block_k, scale, rescale):
    """The tile loop, with the scale and the accumulator's rescaling as the variants set them."""
    offset = k.shape[-2] - q.shape[-2]
    o = torch.empty(*q.shape[:-1], v.shape[-1], dtype=q.dtype)
    lse = torch.empty(q.shape[:-1], dtype=q.dtype)
    for qs in range(0, q.shape[-2], block_q):
        qe = min(qs + block_q, q.shape[-2])
        m = torch.full(q[..., qs:qe, 0].shape, float("-inf"), dtype=q.dtype)
        l = torch.zeros_like(m)
        acc = torch.zeros(*m.shape, v.shape[-1], dtype=q.dtype)
        for ks in range(0, k.shape[-2], block_k):
            ke = min(ks + block_k, k.shape[-2])
            s = q[..., qs:qe, :] @ k[..., ks:ke, :].transpose(-1, -2) * scale
            mask = tile_mask(qs, qe, ks, ke, offset, q.device) if causal else None
            if mask is not None:
                s = s.masked_fill(~mask, float("-inf"))
            m_new = torch.maximum(m, s.amax(-1))
            p = torch.exp(s - m_new[..., None])
            alpha = torch.exp(m - m_new)
            l = alpha * l + p.sum(-1)
            acc = (alpha[..., None] * acc if rescale else acc) + p @ v[..., ks:ke, :]
            m = m_new
        o[..., qs:qe, :] = acc / l[..., None]
        lse[..., qs:qe] = m + torch.log(l)
    return o, lse


def flash_forward_unscaled(q, k, v, causal=False, block_q=16, block_k=16):
    """Scores q·k without the 1/√d scale."""
    return _flash_forward(q, k, v, causal, block_q, block_k, 1.0, True)


def flash_forward_acc_not_rescaled(q, k, v, causal=False, block_q=16, block_k=16):
    """The output accumulator not rescaled by exp(m_old - m_new) (only the sum l is)."""
    return _flash_forward(q, k, v, causal, block_q, block_k, 1.0 / math.sqrt(q.shape[-1]), False)


# ------------------------------------------------------------------ 3.6 the flash backward


def _attention_backward(do, q, k, v, o, lse, causal, scale, use_delta, scaled):
    """The backward on whole matrices, with D and the scale of dQ, dK as the variants set them."""
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    p = torch.exp((q @ k.transpose(-1, -2)) * scale - lse[..., None])
    if causal:
        offset = k.shape[-2] - q.shape[-2]
        keep = torch.ones(q.shape[-2], k.shape[-2], dtype=torch.bool).tril(offset)
        p = p.masked_fill(~keep, 0.0)
    dp = do @ v.transpose(-1, -2)
    ds = p * (dp - (do * o).sum(-1, keepdim=True)) if use_delta else p * dp
    grad_scale = scale if scaled else 1.0
    return ds @ k * grad_scale, ds.transpose(-1, -2) @ q * grad_scale, p.transpose(-1, -2) @ do


def attention_backward_without_delta(do, q, k, v, o, lse, causal=False, scale=None, block_q=32,
                                     block_k=32):
    """dS = P ∘ dP, forgetting to subtract D = rowsum(dO ∘ O) (the softmax's Jacobian term)."""
    return _attention_backward(do, q, k, v, o, lse, causal, scale, False, True)


def attention_backward_unscaled(do, q, k, v, o, lse, causal=False, scale=None, block_q=32,
                                block_k=32):
    """dQ = dS K and dK = dSᵀ Q without the scale the scores were multiplied by."""
    return _attention_backward(do, q, k, v, o, lse, causal, scale, True, False)


# ------------------------------------------------------------------ 3.7 capstone: the Function

# In the notebook these are the learner's own 3.5 and 3.6; here llmlab's stand in.


def flash_forward_(q, k, v, causal=False, block_q=16, block_k=16):
    return flash_attention_forward(q, k, v, causal, None, block_q, block_k)


def flash_backward_(do, q, k, v, o, lse, causal=False, scale=None, block_q=32, block_k=32):
    return flash_attention_backward(do, q, k, v, o, lse, causal, scale, block_q, block_k)


def _member(x, h_kv, n_rep, r):
    """Query heads r, n_rep + r, 2·n_rep + r, ...: the r-th member of every group."""
    return x.unflatten(1, (h_kv, n_rep))[:, :, r]


def _join(parts):
    return torch.stack(parts, 2).flatten(1, 2)


def _tiled_member(x, h_kv, n_rep, r):
    """Query heads r·n_kv_head ... (r + 1)·n_kv_head - 1: a tiled pairing."""
    return x.unflatten(1, (n_rep, h_kv))[:, r]


def _tiled_join(parts):
    return torch.cat(parts, 1)


def _grouped_forward(ctx, q, k, v, causal, block_q, block_k, member, join):
    """The capstone's forward: checks, one run of the forward per member of the groups."""
    if q.dim() != 4 or k.dim() != 4 or v.shape != k.shape or k.shape[0] != q.shape[0] or \
            k.shape[-1] != q.shape[-1] or q.shape[1] % k.shape[1]:
        raise ValueError(f"shapes {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    if causal and q.shape[-2] > k.shape[-2]:
        raise ValueError(f"causal attention needs t_q <= t_k, got {q.shape[-2]} > {k.shape[-2]}")
    if block_q < 1 or block_k < 1:
        raise ValueError(f"block_q, block_k >= 1, got {block_q}, {block_k}")
    h_kv, n_rep = k.shape[1], q.shape[1] // k.shape[1]
    runs = [flash_forward_(member(q, h_kv, n_rep, r), k, v, causal=causal, block_q=block_q,
                           block_k=block_k) for r in range(n_rep)]
    o, lse = join([o for o, _ in runs]), join([lse for _, lse in runs])
    ctx.save_for_backward(q, k, v, o, lse)
    ctx.causal, ctx.blocks = causal, (block_q, block_k)
    return o


def _grouped_backward(ctx, do, member, join, summed=True):
    """The capstone's backward: one run per member; K and V gradients summed (or not)."""
    q, k, v, o, lse = ctx.saved_tensors
    h_kv, n_rep = k.shape[1], q.shape[1] // k.shape[1]
    dq, dk, dv = [], torch.zeros_like(k), torch.zeros_like(v)
    for r in range(n_rep):
        dq_r, dk_r, dv_r = flash_backward_(
            member(do, h_kv, n_rep, r), member(q, h_kv, n_rep, r), k, v,
            member(o, h_kv, n_rep, r), member(lse, h_kv, n_rep, r), causal=ctx.causal,
            block_q=ctx.blocks[0], block_k=ctx.blocks[1])
        dq.append(dq_r)
        dk, dv = (dk + dk_r, dv + dv_r) if summed else (dk_r, dv_r)
    return join(dq), dk, dv, None, None, None


class FlashAttentionTiledGroups(torch.autograd.Function):
    """Query head h paired with KV head h % n_kv_head (tiled, like ``.repeat``), not h // n_rep."""

    @staticmethod
    def forward(ctx, q, k, v, causal=False, block_q=16, block_k=16):
        return _grouped_forward(ctx, q, k, v, causal, block_q, block_k, _tiled_member, _tiled_join)

    @staticmethod
    def backward(ctx, do):
        return _grouped_backward(ctx, do, _tiled_member, _tiled_join)


class FlashAttentionLastMemberOnly(torch.autograd.Function):
    """dK, dV of a group taken from its last query head (assigned, not summed over the group)."""

    @staticmethod
    def forward(ctx, q, k, v, causal=False, block_q=16, block_k=16):
        return _grouped_forward(ctx, q, k, v, causal, block_q, block_k, _member, _join)

    @staticmethod
    def backward(ctx, do):
        return _grouped_backward(ctx, do, _member, _join, summed=False)


class FlashAttentionBackwardNotCausal(torch.autograd.Function):
    """The backward run without the causal mask (``causal`` not kept for it)."""

    @staticmethod
    def forward(ctx, q, k, v, causal=False, block_q=16, block_k=16):
        return _grouped_forward(ctx, q, k, v, causal, block_q, block_k, _member, _join)

    @staticmethod
    def backward(ctx, do):
        ctx.causal = False
        return _grouped_backward(ctx, do, _member, _join)


# ------------------------------------------------------------------ 3.8 predict: a score matrix


def score_mib_seq_by_d(seq=1024, heads=2):
    """seq × d_head (64) numbers per head instead of seq × seq."""
    return heads * seq * 64 * 4 / 2**20


def score_mib_two_bytes(seq=1024, heads=2):
    """2 bytes per number: float32 takes 4."""
    return heads * seq * seq * 2 / 2**20


# ------------------------------------------------------------------ 3.9 MLA on the latent


def _absorbed(q_nope, q_rope, c_kv, k_rope, w_uk, w_uv, scale, mask, softmax_dim, diagonal):
    q_latent = torch.einsum("bshn,hnc->bhsc", q_nope, w_uk)
    scores = (torch.einsum("bhsc,btc->bhst", q_latent, c_kv)
              + torch.einsum("bshr,btr->bhst", q_rope, k_rope)) * scale
    if mask is None:
        s, T = q_nope.shape[1], c_kv.shape[1]
        mask = torch.ones(s, T, dtype=torch.bool).tril(diagonal(s, T))
    probs = torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=softmax_dim)
    return torch.einsum("bhsc,hvc->bshv", torch.einsum("bhst,btc->bhsc", probs.nan_to_num(), c_kv),
                        w_uv)


def absorbed_softmax_over_queries(q_nope, q_rope, c_kv, k_rope, w_uk, w_uv, scale, mask=None):
    """The softmax over the queries (dim=-2), not over the keys."""
    return _absorbed(q_nope, q_rope, c_kv, k_rope, w_uk, w_uv, scale, mask, -2,
                     lambda s, T: T - s)


def absorbed_mask_top_left(q_nope, q_rope, c_kv, k_rope, w_uk, w_uv, scale, mask=None):
    """The causal mask aligned top-left (tril(0)): new queries cannot see the cached tokens."""
    return _absorbed(q_nope, q_rope, c_kv, k_rope, w_uk, w_uv, scale, mask, -1, lambda s, T: 0)


# ------------------------------------------------------------------ 3.10 linear attention


def _linear_recurrent(q, k, v, eps, feature, read_first):
    fq, fk = feature(q), feature(k)
    S = torch.zeros(*q.shape[:2], q.shape[-1], v.shape[-1], dtype=v.dtype)
    z = torch.zeros(*q.shape[:2], q.shape[-1], dtype=v.dtype)
    outs = []
    for t in range(q.shape[-2]):
        if read_first:
            num = torch.einsum("bhk,bhkv->bhv", fq[..., t, :], S)
            outs.append(num / ((fq[..., t, :] * z).sum(-1, keepdim=True) + eps))
        S = S + torch.einsum("bhk,bhv->bhkv", fk[..., t, :], v[..., t, :])
        z = z + fk[..., t, :]
        if not read_first:
            num = torch.einsum("bhk,bhkv->bhv", fq[..., t, :], S)
            outs.append(num / ((fq[..., t, :] * z).sum(-1, keepdim=True) + eps))
    return torch.stack(outs, dim=-2)


def linear_reads_before_update(q, k, v, eps=1e-6):
    """The state read before token t is added: a token does not see itself."""
    return _linear_recurrent(q, k, v, eps, lambda x: F.elu(x) + 1, True)


def linear_elu_without_one(q, k, v, eps=1e-6):
    """φ = elu, without the + 1 that keeps the features positive."""
    return _linear_recurrent(q, k, v, eps, F.elu, False)


# ------------------------------------------------------------------ 3.11 YaRN


def _yarn(d_head, base, factor, original_max_len, beta_fast, beta_slow, reversed_ramp,
          temperature):
    """YaRN's frequencies written out (the exercise blocks llmlab's), ramp and factor as set."""
    def channel(rotations):
        return d_head * math.log(original_max_len / (2 * math.pi * rotations)) / (2 * math.log(base))

    low = max(math.floor(channel(beta_fast)), 0)
    high = min(math.ceil(channel(beta_slow)), d_head - 1)
    high = high + 0.001 if high == low else high
    gamma = ((torch.arange(d_head // 2, dtype=torch.float32) - low) / (high - low)).clamp(0, 1)
    gamma = 1 - gamma if reversed_ramp else gamma
    theta = rope_frequencies(d_head, base)
    factor_out = (0.1 * math.log(factor) + 1.0) if temperature and factor > 1 else 1.0
    return theta / factor * gamma + theta * (1 - gamma), factor_out


def yarn_ramp_reversed(d_head, base, factor, original_max_len, beta_fast=32.0, beta_slow=1.0):
    """YaRN with the ramp the wrong way round: the fast dimensions interpolated, the slow kept."""
    return _yarn(d_head, base, factor, original_max_len, beta_fast, beta_slow, True, True)


def yarn_without_temperature(d_head, base, factor, original_max_len, beta_fast=32.0, beta_slow=1.0):
    """YaRN's frequencies with the attention factor left at 1."""
    return _yarn(d_head, base, factor, original_max_len, beta_fast, beta_slow, False, False)


# ------------------------------------------------------------------ 3.12 the Triton tile loop


def _kernel_acc_not_rescaled(Q, K, V, O, LSE, scale, t_q, t_k, H, GROUP, D,
                                  sqb, sqh, sqt, skb, skh, skt, CAUSAL: tl.constexpr,
                                  BLOCK_Q: tl.constexpr, BLOCK_K: tl.constexpr,
                                  BLOCK_D: tl.constexpr):
    """The accumulator not rescaled by exp(m_old - m_new) (only l is)."""
    i, bh = tl.program_id(0), tl.program_id(1)
    b, h = bh // H, bh % H
    rows = i * BLOCK_Q + tl.arange(0, BLOCK_Q)
    dims = tl.arange(0, BLOCK_D)
    q = tl.load(Q + b * sqb + h * sqh + rows[:, None] * sqt + dims[None, :],
                mask=(rows[:, None] < t_q) & (dims[None, :] < D), other=0.0)
    kv = K + b * skb + (h // GROUP) * skh
    vv = V + b * skb + (h // GROUP) * skh
    offset = t_k - t_q
    m = tl.full([BLOCK_Q], -float("inf"), tl.float32)
    l = tl.zeros([BLOCK_Q], tl.float32)
    acc = tl.zeros([BLOCK_Q, BLOCK_D], tl.float32)
    hi = t_k
    if CAUSAL:
        hi = tl.minimum(t_k, (i + 1) * BLOCK_Q + offset)
    for start in range(0, hi, BLOCK_K):
        cols = start + tl.arange(0, BLOCK_K)
        kv_mask = (cols[:, None] < t_k) & (dims[None, :] < D)
        k = tl.load(kv + cols[:, None] * skt + dims[None, :], mask=kv_mask, other=0.0)
        v = tl.load(vv + cols[:, None] * skt + dims[None, :], mask=kv_mask, other=0.0)
        s = tl.dot(q, tl.trans(k)) * scale
        visible = cols[None, :] < t_k
        if CAUSAL:
            visible = visible & (cols[None, :] <= rows[:, None] + offset)
        s = tl.where(visible, s, -float("inf"))
        m_new = tl.maximum(m, tl.max(s, axis=1))
        shift = tl.where(m_new == -float("inf"), 0.0, m_new)
        alpha = tl.exp(m - shift)
        p = tl.exp(s - shift[:, None])
        l = l * alpha + tl.sum(p, axis=1)
        acc = acc + tl.dot(p.to(v.dtype), v)
        m = m_new
    out = acc / tl.where(l == 0.0, 1.0, l)[:, None]
    tl.store(O + b * sqb + h * sqh + rows[:, None] * sqt + dims[None, :],
             out.to(O.dtype.element_ty), mask=(rows[:, None] < t_q) & (dims[None, :] < D))
    tl.store(LSE + bh * t_q + rows, m + tl.log(l), mask=rows < t_q)


def _kernel_unscaled(Q, K, V, O, LSE, scale, t_q, t_k, H, GROUP, D,
                          sqb, sqh, sqt, skb, skh, skt, CAUSAL: tl.constexpr,
                          BLOCK_Q: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_D: tl.constexpr):
    """Scores tl.dot(q, kᵀ) without the scale."""
    i, bh = tl.program_id(0), tl.program_id(1)
    b, h = bh // H, bh % H
    rows = i * BLOCK_Q + tl.arange(0, BLOCK_Q)
    dims = tl.arange(0, BLOCK_D)
    q = tl.load(Q + b * sqb + h * sqh + rows[:, None] * sqt + dims[None, :],
                mask=(rows[:, None] < t_q) & (dims[None, :] < D), other=0.0)
    kv = K + b * skb + (h // GROUP) * skh
    vv = V + b * skb + (h // GROUP) * skh
    offset = t_k - t_q
    m = tl.full([BLOCK_Q], -float("inf"), tl.float32)
    l = tl.zeros([BLOCK_Q], tl.float32)
    acc = tl.zeros([BLOCK_Q, BLOCK_D], tl.float32)
    hi = t_k
    if CAUSAL:
        hi = tl.minimum(t_k, (i + 1) * BLOCK_Q + offset)
    for start in range(0, hi, BLOCK_K):
        cols = start + tl.arange(0, BLOCK_K)
        kv_mask = (cols[:, None] < t_k) & (dims[None, :] < D)
        k = tl.load(kv + cols[:, None] * skt + dims[None, :], mask=kv_mask, other=0.0)
        v = tl.load(vv + cols[:, None] * skt + dims[None, :], mask=kv_mask, other=0.0)
        s = tl.dot(q, tl.trans(k))
        visible = cols[None, :] < t_k
        if CAUSAL:
            visible = visible & (cols[None, :] <= rows[:, None] + offset)
        s = tl.where(visible, s, -float("inf"))
        m_new = tl.maximum(m, tl.max(s, axis=1))
        shift = tl.where(m_new == -float("inf"), 0.0, m_new)
        alpha = tl.exp(m - shift)
        p = tl.exp(s - shift[:, None])
        l = l * alpha + tl.sum(p, axis=1)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)
        m = m_new
    out = acc / tl.where(l == 0.0, 1.0, l)[:, None]
    tl.store(O + b * sqb + h * sqh + rows[:, None] * sqt + dims[None, :],
             out.to(O.dtype.element_ty), mask=(rows[:, None] < t_q) & (dims[None, :] < D))
    tl.store(LSE + bh * t_q + rows, m + tl.log(l), mask=rows < t_q)


# jit-compiled under other names than the functions', so that both pickle (by name)
flash_kernel_acc_not_rescaled = triton.jit(_kernel_acc_not_rescaled)
flash_kernel_unscaled = triton.jit(_kernel_unscaled)


CATALOGUE = Catalogue({
    "predict_mla": [
        Mistake("a latent for the key and another for the value", mla_key_and_value_latents),
        Mistake("bytes, not KiB", mla_bytes_not_kib),
    ],
    "repeat_kv": [
        Mistake("heads tiled (0, 1, 0, 1) by .repeat instead of interleaved (0, 0, 1, 1)",
                repeat_kv_tiled),
        Mistake("copies along the sequence (dim 2) instead of the heads (dim 1)",
                repeat_kv_on_positions),
    ],
    "sliding_window_mask": [
        Mistake("the window one key too wide (p - j <= window)", window_one_too_wide),
        Mistake("queries at 0 .. seq_q - 1, not at the last seq_q positions", window_without_offset),
    ],
    "online_softmax": [
        Mistake("the running sum not rescaled by exp(m_old - m_new)", online_softmax_sum_not_rescaled),
        Mistake("each block normalised on its own, not the whole row", online_softmax_per_block),
    ],
    "flash_forward": [
        Mistake("scores without the 1/√d scale", flash_forward_unscaled),
        Mistake("the accumulator not rescaled by exp(m_old - m_new)", flash_forward_acc_not_rescaled),
    ],
    "flash_backward": [
        Mistake("dS = P ∘ dP without subtracting D", attention_backward_without_delta),
        Mistake("dQ and dK without the scale", attention_backward_unscaled),
    ],
    "flash_capstone": [
        Mistake("query head h paired with KV head h % n_kv_head (tiled), not h // n_rep",
                FlashAttentionTiledGroups),
        Mistake("dK, dV of a group from its last query head only (assigned, not summed)",
                FlashAttentionLastMemberOnly),
        Mistake("the backward without the causal mask", FlashAttentionBackwardNotCausal),
    ],
    "predict_scores": [
        Mistake("seq × d_head instead of seq × seq", score_mib_seq_by_d),
        Mistake("2 bytes per number (float32 takes 4)", score_mib_two_bytes),
    ],
    "mla_absorb": [
        Mistake("the softmax over the queries (dim=-2), not the keys", absorbed_softmax_over_queries),
        Mistake("the causal mask aligned top-left: new queries miss the cached tokens",
                absorbed_mask_top_left),
    ],
    "linear_recurrent": [
        Mistake("the state read before token t is added (a token does not see itself)",
                linear_reads_before_update),
        Mistake("φ = elu without the + 1", linear_elu_without_one),
    ],
    "yarn": [
        Mistake("the ramp reversed (fast channels interpolated)", yarn_ramp_reversed),
        Mistake("no attention temperature", yarn_without_temperature),
    ],
    "triton_flash": [
        Mistake("the accumulator not rescaled by exp(m_old - m_new)", flash_kernel_acc_not_rescaled),
        Mistake("scores without the scale", flash_kernel_unscaled),
    ],
})

__all__ = ["CATALOGUE"]
