"""Causal scaled dot-product attention and multi-head attention with grouped KV heads.

- Attention: Vaswani et al., "Attention Is All You Need", arXiv:1706.03762:
  softmax(Q K^T / sqrt(d_head) + causal mask) V.
- Grouped-query attention (GQA): Ainslie et al., "GQA: Training Generalized Multi-Query
  Transformer Models from Multi-Head Checkpoints", arXiv:2305.13245. ``n_kv_head`` key/value
  heads are shared by groups of ``n_head // n_kv_head`` query heads; ``n_kv_head == n_head`` is
  multi-head attention, ``n_kv_head == 1`` is multi-query attention (Shazeer, arXiv:1911.02150).

``causal_attention`` is the readable reference; ``fast_causal_attention`` goes through
``torch.nn.functional.scaled_dot_product_attention`` (fused, memory-efficient) and is tested to
agree with it. Taught in chapter 02 (solutions/02_gpt); chapter 03 builds its variants on these.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from llmlab.nn.context import StepContext, step_positions
from llmlab.nn.functional import softmax
from llmlab.nn.linear import Linear
from llmlab.nn.norm import RMSNorm
from llmlab.nn.rope import RotaryEmbedding


def causal_mask(t_q: int, t_k: int, device: torch.device | None = None) -> torch.Tensor:
    """Bool (t_q, t_k), True = may attend. Query i sits at absolute position t_k - t_q + i
    (the last t_q of t_k tokens, as when decoding with a KV cache) and sees keys <= it."""
    if t_q > t_k:
        raise ValueError(f"a causal mask needs t_q <= t_k, got t_q={t_q}, t_k={t_k}")
    q_pos = torch.arange(t_k - t_q, t_k, device=device).unsqueeze(1)
    return torch.arange(t_k, device=device).unsqueeze(0) <= q_pos


def padded_causal_mask(key_valid: torch.Tensor, t_new: int) -> torch.Tensor:
    """Causal mask with the queries at the last ``t_new`` keys, minus invalid (padding) keys.

    key_valid: (batch, T) bool -> (batch, 1, t_new, T) bool. A query that would see no key (a
    padding query) is allowed to see every key instead, so softmax never sees an all-masked row;
    its output is never used.
    """
    batch, T = key_valid.shape
    if t_new > T:
        raise ValueError(f"t_new={t_new} queries but only T={T} keys")
    mask = causal_mask(t_new, T, key_valid.device)[None] & key_valid[:, None, :]  # (b, t_new, T)
    empty = ~mask.any(-1, keepdim=True)
    return (mask | empty)[:, None]


def check_qkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, same_heads: bool = False) -> None:
    """The one shape check of every attention function: raise ``ValueError`` unless
    q is (batch, n_head, t_q, d), k (batch, n_kv_head, t_k, d), v (batch, n_kv_head, t_k, d_v)
    with ``n_head`` a multiple of ``n_kv_head`` (equal when ``same_heads``)."""
    if q.dim() != 4 or k.dim() != 4 or v.dim() != 4:
        raise ValueError(
            "attention expects q (batch, n_head, t_q, d_head) and k, v (batch, n_kv_head, "
            f"t_k, d_head), all 4-d; got q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}"
        )
    if k.shape[:3] != v.shape[:3] or q.shape[0] != k.shape[0] or q.shape[-1] != k.shape[-1]:
        raise ValueError(
            f"incompatible q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}: need the "
            "same batch, k/v the same heads and length, q/k the same d_head"
        )
    if same_heads and q.shape[1] != k.shape[1]:
        raise ValueError(f"q has {q.shape[1]} heads but k/v have {k.shape[1]}; expand grouped "
                         "KV heads with repeat_kv first")
    if q.shape[1] % k.shape[1]:
        raise ValueError(f"n_head ({q.shape[1]}) must be a multiple of n_kv_head ({k.shape[1]})")


def attention_mask(mask: torch.Tensor | None, is_causal: bool, t_q: int, t_k: int,
                   device: torch.device) -> torch.Tensor | None:
    """The one mask convention: bool, True = may attend; with ``is_causal`` the bottom-right
    causal mask is ANDed with ``mask``. Returns None when every key is visible."""
    if not is_causal:
        return mask
    causal = causal_mask(t_q, t_k, device)
    return causal if mask is None else mask & causal


def accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    """fp32 for fp16/bf16 inputs (scores, softmax and sums stay exact enough), else the input's."""
    return torch.promote_types(dtype, torch.float32)


def attention_scores(q: torch.Tensor, k: torch.Tensor, mask: torch.Tensor | None = None,
                     is_causal: bool = False, scale: float | None = None,
                     bias: torch.Tensor | None = None) -> torch.Tensor:
    """Scaled, masked logits in at least fp32 (masked entries -inf), grouped KV heads repeated.

    q: (batch, n_head, t_q, d), k: (batch, n_kv_head, t_k, d); mask: bool broadcasting to
    (batch, n_head, t_q, t_k); bias: additive (e.g. ALiBi) -> (batch, n_head, t_q, t_k) fp32.
    """
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    k = k.repeat_interleave(q.shape[1] // k.shape[1], dim=1)  # head h reads kv head h // group
    acc = accumulation_dtype(q.dtype)
    scores = (q.to(acc) @ k.to(acc).transpose(-2, -1)) * scale  # (batch, n_head, t_q, t_k)
    if bias is not None:
        scores = scores + bias
    allowed = attention_mask(mask, is_causal, q.shape[2], k.shape[2], q.device)
    return scores if allowed is None else scores.masked_fill(~allowed, float("-inf"))


def attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None,
    is_causal: bool = False, scale: float | None = None,
) -> torch.Tensor:
    """The reference attention every variant, cache and kernel is tested against.

    softmax(q k^T * scale + mask) v with scores and softmax in >= fp32 (Vaswani et al.,
    arXiv:1706.03762). q: (batch, n_head, t_q, d); k: (batch, n_kv_head, t_k, d);
    v: (batch, n_kv_head, t_k, d_v); mask: bool broadcasting to (batch, n_head, t_q, t_k),
    True = may attend; ``is_causal`` ANDs the bottom-right causal mask (query i at position
    t_k - t_q + i); scale defaults to 1/sqrt(d). A query that may see no key outputs zeros.
    -> (batch, n_head, t_q, d_v) in v's dtype.
    """
    check_qkv(q, k, v)
    probs = softmax(attention_scores(q, k, mask, is_causal, scale), dim=-1)
    v = v.repeat_interleave(q.shape[1] // v.shape[1], dim=1)
    return (probs @ v.to(probs.dtype)).to(v.dtype)


def fast_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None,
    is_causal: bool = False, scale: float | None = None,
) -> torch.Tensor:
    """The one fast path: ``attention``'s contract through PyTorch's fused
    ``scaled_dot_product_attention`` (FlashAttention-2 / memory-efficient kernels on a GPU)."""
    check_qkv(q, k, v)
    t_q, t_k = q.shape[2], k.shape[2]
    gqa = q.shape[1] != k.shape[1]
    if is_causal and mask is None and t_q == t_k:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale, enable_gqa=gqa)
    mask = attention_mask(mask, is_causal and t_q > 1, t_q, t_k, q.device)  # 1 query sees all
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale, enable_gqa=gqa)


def causal_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Causal self-attention with grouped KV heads, the way chapter 02 writes it.

    q: (batch, n_head, t_q, d_head); k, v: (batch, n_kv_head, t_k, d_head);
    mask: optional bool (batch, 1, t_q, t_k), True = may attend — a complete mask (a KV cache's,
    causality included); without one the bottom-right causal mask applies.
    -> (batch, n_head, t_q, d_head). ``attention(q, k, v, mask, is_causal=mask is None)``.
    """
    return attention(q, k, v, mask, is_causal=mask is None)


def fast_causal_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Same contract as ``causal_attention``, through the fast path ``fast_attention``."""
    return fast_attention(q, k, v, mask, is_causal=mask is None)


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention with ``n_kv_head`` grouped KV heads and optional RoPE.

    forward(x: (batch, seq, d_model), ctx: StepContext | None, layer_idx) -> (batch, seq, d_model).
    The step context (:mod:`llmlab.nn.context`) gives the positions (default ``0 .. seq-1``), the
    mask (None: causal) and the KV cache: ``ctx.cache.update(layer_idx, k, v)`` with k, v laid out
    (batch, seq, n_kv_head, d_head) after RoPE returns the (batch, T, ...) keys and values to
    attend to.

    Two options of later model families, both off by default: ``qkv_bias`` gives q/k/v (not the
    output projection) a bias, as Qwen2 does (``bias`` gives all four one, as GPT-2 does);
    ``qk_norm`` RMS-normalises every query and key head over ``d_head`` before RoPE, with one
    learned gain shared by the heads (``q_norm``, ``k_norm``), as Qwen3 does (Qwen Team, "Qwen3
    Technical Report", arXiv:2505.09388; Dehghani et al., arXiv:2302.05442, "QK-norm").
    """

    def __init__(
        self,
        d_model: int,
        n_head: int,
        n_kv_head: int | None = None,
        d_head: int | None = None,
        bias: bool = False,
        rope: RotaryEmbedding | None = None,
        fast: bool = True,
        qkv_bias: bool = False,
        qk_norm: bool = False,
        norm_eps: float = 1e-6,
    ) -> None:
        super().__init__()
        n_kv_head = n_kv_head or n_head
        if n_head % n_kv_head:
            raise ValueError(f"n_head ({n_head}) must be a multiple of n_kv_head ({n_kv_head})")
        d_head = d_head or d_model // n_head
        self.n_head, self.n_kv_head, self.d_head = n_head, n_kv_head, d_head
        self.q_proj = Linear(d_model, n_head * d_head, bias=bias or qkv_bias)
        self.k_proj = Linear(d_model, n_kv_head * d_head, bias=bias or qkv_bias)
        self.v_proj = Linear(d_model, n_kv_head * d_head, bias=bias or qkv_bias)
        self.o_proj = Linear(n_head * d_head, d_model, bias=bias)
        if qk_norm:  # only then are they modules: the default layer's state dict is unchanged
            self.q_norm, self.k_norm = RMSNorm(d_head, norm_eps), RMSNorm(d_head, norm_eps)
        else:
            self.q_norm = self.k_norm = None
        self.rope = rope
        self.attend = fast_causal_attention if fast else causal_attention

    def project(self, x: torch.Tensor, positions: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Queries (b, t, n_head, d_head) and keys, values (b, t, n_kv_head, d_head) of
        x (b, t, d_model): projected, q/k-normalised when ``qk_norm``, rotated at ``positions``
        (b, t) (default ``0 .. t-1``) when the layer has RoPE."""
        b, t, _ = x.shape
        q = self.q_proj(x).view(b, t, self.n_head, self.d_head)  # (b, t, n_head, d_head)
        k = self.k_proj(x).view(b, t, self.n_kv_head, self.d_head)  # (b, t, n_kv_head, d_head)
        v = self.v_proj(x).view(b, t, self.n_kv_head, self.d_head)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        if self.rope is not None:
            positions = step_positions(b, t, x.device) if positions is None else positions
            cos, sin = self.rope(positions)  # (b, t, d_head/2)
            q, k = self.rope.rotate(q, cos, sin), self.rope.rotate(k, cos, sin)
        return q, k, v

    def forward(self, x: torch.Tensor, ctx: StepContext | None = None,
                layer_idx: int = 0) -> torch.Tensor:
        if x.dim() != 3:
            raise ValueError(f"attention expects x (batch, seq, d_model), got {tuple(x.shape)}")
        b, t, _ = x.shape
        q, k, v = self.project(x, None if ctx is None else ctx.positions)
        mask = None if ctx is None else ctx.mask  # (b | 1, 1, t, T) bool, or None = causal
        if ctx is not None and ctx.cache is not None:  # the KV cache: past + new keys and values
            ctx.cache.observe_queries(layer_idx, q)  # (b, t, n_head, d_head) after RoPE
            k, v = ctx.cache.update(layer_idx, k, v)  # (b, T, n_kv_head, d_head)
        y = self.attend(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), mask)
        return self.o_proj(y.transpose(1, 2).reshape(b, t, self.n_head * self.d_head))
