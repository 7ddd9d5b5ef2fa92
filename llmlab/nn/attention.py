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

from llmlab.nn.functional import softmax
from llmlab.nn.linear import Linear
from llmlab.nn.rope import RotaryEmbedding


def causal_mask(t_q: int, t_k: int, device: torch.device | None = None) -> torch.Tensor:
    """Bool (t_q, t_k), True = may attend. Query i sits at absolute position t_k - t_q + i
    (the last t_q of t_k tokens, as when decoding with a KV cache) and sees keys <= it."""
    offset = t_k - t_q
    q_pos = torch.arange(t_q, device=device).unsqueeze(1) + offset
    return torch.arange(t_k, device=device).unsqueeze(0) <= q_pos


def _check_qkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
    if q.dim() != 4 or k.dim() != 4 or k.shape != v.shape:
        raise ValueError(
            "attention expects q (batch, n_head, t_q, d_head) and k, v (batch, n_kv_head, "
            f"t_k, d_head); got q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}"
        )
    if q.shape[1] % k.shape[1] or q.shape[-1] != k.shape[-1] or q.shape[0] != k.shape[0]:
        raise ValueError(
            f"n_head ({q.shape[1]}) must be a multiple of n_kv_head ({k.shape[1]}) and batch "
            f"and d_head must match; got q {tuple(q.shape)}, k {tuple(k.shape)}"
        )


def causal_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Reference causal attention with grouped KV heads, written step by step.

    q: (batch, n_head, t_q, d_head); k, v: (batch, n_kv_head, t_k, d_head);
    mask: optional bool (batch, 1, t_q, t_k), True = may attend (replaces the causal mask).
    -> (batch, n_head, t_q, d_head)
    """
    _check_qkv(q, k, v)
    group = q.shape[1] // k.shape[1]
    k = k.repeat_interleave(group, dim=1)  # (batch, n_head, t_k, d_head): head h uses kv h//group
    v = v.repeat_interleave(group, dim=1)
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])  # (batch, n_head, t_q, t_k)
    allowed = mask if mask is not None else causal_mask(q.shape[2], k.shape[2], q.device)
    scores = scores.masked_fill(~allowed, float("-inf"))
    return softmax(scores.float(), dim=-1).to(v.dtype) @ v


def fast_causal_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Same contract as ``causal_attention``, through PyTorch's fused SDPA kernel."""
    _check_qkv(q, k, v)
    t_q, t_k = q.shape[2], k.shape[2]
    gqa = q.shape[1] != k.shape[1]
    if mask is None and t_q == t_k:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=gqa)
    if mask is None and t_q > 1:  # decoding a chunk after a cache: causal with an offset
        mask = causal_mask(t_q, t_k, q.device)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=gqa)


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention with ``n_kv_head`` grouped KV heads and optional RoPE.

    forward(x: (batch, seq, d_model), positions: (batch, seq) | None, cache, layer_idx)
    -> (batch, seq, d_model). ``positions`` default to ``arange(offset, offset + seq)`` where
    ``offset = cache.offset`` (0 without a cache). The KV-cache protocol is described in
    ``llmlab.kvcache``: ``cache.update(layer_idx, k, v)`` with k, v laid out
    (batch, t_new, n_kv_head, d_head) after RoPE returns the full (batch, T, …) tensors, and
    ``cache.attn_mask(t_new)`` returns a bool (batch, 1, t_new, T) mask or None (plain causal).
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
    ) -> None:
        super().__init__()
        n_kv_head = n_kv_head or n_head
        if n_head % n_kv_head:
            raise ValueError(f"n_head ({n_head}) must be a multiple of n_kv_head ({n_kv_head})")
        d_head = d_head or d_model // n_head
        self.n_head, self.n_kv_head, self.d_head = n_head, n_kv_head, d_head
        self.q_proj = Linear(d_model, n_head * d_head, bias=bias)
        self.k_proj = Linear(d_model, n_kv_head * d_head, bias=bias)
        self.v_proj = Linear(d_model, n_kv_head * d_head, bias=bias)
        self.o_proj = Linear(n_head * d_head, d_model, bias=bias)
        self.rope = rope
        self.attend = fast_causal_attention if fast else causal_attention

    def forward(
        self,
        x: torch.Tensor,
        positions: torch.Tensor | None = None,
        cache=None,
        layer_idx: int = 0,
    ) -> torch.Tensor:
        if x.dim() != 3:
            raise ValueError(f"attention expects x (batch, seq, d_model), got {tuple(x.shape)}")
        b, t, _ = x.shape
        q = self.q_proj(x).view(b, t, self.n_head, self.d_head)  # (b, t, n_head, d_head)
        k = self.k_proj(x).view(b, t, self.n_kv_head, self.d_head)  # (b, t, n_kv_head, d_head)
        v = self.v_proj(x).view(b, t, self.n_kv_head, self.d_head)
        if self.rope is not None:
            if positions is None:
                offset = cache.offset if cache is not None else 0
                positions = torch.arange(offset, offset + t, device=x.device).expand(b, t)
            cos, sin = self.rope(positions)  # (b, t, d_head/2)
            q, k = self.rope.rotate(q, cos, sin), self.rope.rotate(k, cos, sin)
        mask = None
        if cache is not None:  # kv-cache hook
            if hasattr(cache, "observe_queries"):  # caches that evict by attention (H2O)
                cache.observe_queries(layer_idx, q)  # (b, t, n_head, d_head) after RoPE
            k, v = cache.update(layer_idx, k, v)  # (b, T, n_kv_head, d_head), past + new
            mask = cache.attn_mask(t)  # (b, 1, t, T) bool or None (= causal, offset T - t)
        y = self.attend(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), mask)
        return self.o_proj(y.transpose(1, 2).reshape(b, t, self.n_head * self.d_head))
