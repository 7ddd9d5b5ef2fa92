"""Multi-head latent attention (MLA), DeepSeek-V2/V3: cache one small latent per token.

"DeepSeek-V2: A Strong, Economical, and Efficient Mixture-of-Experts Language Model"
(arXiv 2405.04434, section 2.1) and "DeepSeek-V3 Technical Report" (arXiv 2412.19437):

- keys and values are up-projected from a shared latent ``c_kv = RMSNorm(W^DKV x)`` of size
  ``d_c`` (``kv_lora_rank``): ``k^C = W^UK c_kv``, ``v = W^UV c_kv`` per head;
- RoPE cannot pass through ``W^UK`` (a rotation between ``q`` and ``W^UK`` would not commute), so
  a separate small key ``k^R = RoPE(W^KR x)`` of size ``d_rope``, shared by all heads, carries
  position; each head's query has a matching RoPE part;
- the cache holds only ``c_kv`` and ``k^R``: ``d_c + d_rope`` numbers per token per layer;
- at inference ``W^UK`` is *absorbed* into the query (``q^T W^UK c = (W^UK^T q)^T c``) and
  ``W^UV`` applied after the attention-weighted sum of latents, so the per-head keys and values
  are never materialised (:func:`absorbed_attention`).

Weight names follow Hugging Face ``DeepseekV3Attention``. Taught in chapter 03
(solutions/03_attention).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import torch
from torch import nn

from llmlab.attention.naive import naive_attention
from llmlab.nn.attention import accumulation_dtype, attention_mask
from llmlab.nn.context import StepContext, step_positions
from llmlab.nn.functional import softmax
from llmlab.nn.kinds import BASE_KINDS
from llmlab.nn.linear import Linear
from llmlab.nn.norm import RMSNorm
from llmlab.nn.rope import RotaryEmbedding
from llmlab.utils import reject_unknown_keys

MLA_OPTIONS = ("kv_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim", "q_lora_rank")


@reject_unknown_keys
@dataclass(frozen=True)
class MLAConfig:
    """Sizes of MLA (names as in DeepSeek's ``config.json``)."""

    d_model: int
    n_head: int
    kv_lora_rank: int  # d_c: size of the cached latent
    qk_nope_head_dim: int  # d_h: per-head query/key size without position
    qk_rope_head_dim: int  # d_h^R: size of the decoupled RoPE query/key
    v_head_dim: int  # per-head value size
    q_lora_rank: int = 0  # d_c': low-rank query (0 = a full-rank query projection)
    rope_base: float = 10000.0
    norm_eps: float = 1e-6

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            smallest = 0 if f.name == "q_lora_rank" else 1e-12
            if value < smallest:
                raise ValueError(f"MLAConfig.{f.name} must be positive, got {value}")
        if self.qk_rope_head_dim % 2:
            raise ValueError(f"qk_rope_head_dim must be even, got {self.qk_rope_head_dim}")

    @classmethod
    def from_config(cls, config) -> MLAConfig:
        """From a ``GPTConfig``: sizes from ``config.attention_options`` where given, else
        DeepSeek-V3's ratios to ``d_head`` (``kv_lora_rank = 4 d_head``,
        ``qk_rope_head_dim = d_head / 2``, ``qk_nope_head_dim = v_head_dim = d_head``)."""
        d_head = getattr(config, "d_head", None) or config.d_model // config.n_head
        options = dict(getattr(config, "attention_options", None) or {})
        unknown = sorted(set(options) - set(MLA_OPTIONS))
        if unknown:
            raise ValueError(f"unknown MLA attention_options {unknown}; known: {MLA_OPTIONS}")
        defaults = dict(kv_lora_rank=4 * d_head, qk_nope_head_dim=d_head,
                        qk_rope_head_dim=d_head // 2, v_head_dim=d_head, q_lora_rank=0)
        return cls(config.d_model, config.n_head, **{**defaults, **options},
                   rope_base=getattr(config, "rope_base", 10000.0),
                   norm_eps=getattr(config, "norm_eps", 1e-6))

    def cache_numbers_per_token(self) -> int:
        """Numbers cached per token and layer: the latent plus the shared RoPE key."""
        return self.kv_lora_rank + self.qk_rope_head_dim


def absorbed_attention(q_nope: torch.Tensor, q_rope: torch.Tensor, c_kv: torch.Tensor,
                       k_rope: torch.Tensor, w_uk: torch.Tensor, w_uv: torch.Tensor,
                       scale: float, mask: torch.Tensor | None = None) -> torch.Tensor:
    """MLA attention computed on the latent, never forming per-head keys or values.

    q_nope: (batch, seq, n_head, d_nope), q_rope: (batch, seq, n_head, d_rope),
    c_kv: (batch, T, d_c), k_rope: (batch, T, d_rope), w_uk: (n_head, d_nope, d_c),
    w_uv: (n_head, d_v, d_c), mask: bool broadcastable to (batch, n_head, seq, T) or None
    (causal, queries at the last ``seq`` positions) -> (batch, seq, n_head, d_v).
    """
    q_latent = torch.einsum("bshn,hnc->bhsc", q_nope, w_uk)  # W^UK absorbed into the query
    scores = (torch.einsum("bhsc,btc->bhst", q_latent, c_kv)
              + torch.einsum("bshr,btr->bhst", q_rope, k_rope)) * scale
    seq, T = q_nope.shape[1], c_kv.shape[1]
    mask = attention_mask(mask, mask is None, seq, T, c_kv.device)  # None: causal
    scores = scores.to(accumulation_dtype(scores.dtype)).masked_fill(~mask, float("-inf"))
    probs = softmax(scores, dim=-1).to(c_kv.dtype)
    out_latent = torch.einsum("bhst,btc->bhsc", probs, c_kv)  # weighted sum of latents
    return torch.einsum("bhsc,hvc->bshv", out_latent, w_uv)  # W^UV applied once per query


class MultiHeadLatentAttention(nn.Module):
    """MLA with the ``llmlab.nn`` attention interface and the KV-cache protocol.

    forward(x: (batch, seq, d_model), ctx: StepContext | None, layer_idx) -> (batch, seq, d_model).
    The step's cache receives ``c_kv: (batch, t_new, kv_lora_rank)`` and
    ``k_rope: (batch, t_new, qk_rope_head_dim)``. ``absorb`` picks the form: True = absorbed,
    False = naive (per-head K, V up-projected from the latent), None = absorbed exactly when the
    step has a cache (decoding), naive otherwise (training).
    """

    def __init__(self, config, rope: RotaryEmbedding | None = None,
                 absorb: bool | None = None) -> None:
        super().__init__()
        cfg = config if isinstance(config, MLAConfig) else MLAConfig.from_config(config)
        self.config, self.absorb = cfg, absorb
        h, d_nope, d_v = cfg.n_head, cfg.qk_nope_head_dim, cfg.v_head_dim
        d_rope = cfg.qk_rope_head_dim
        if cfg.q_lora_rank:
            self.q_a_proj = Linear(cfg.d_model, cfg.q_lora_rank, bias=False)  # W^DQ
            self.q_a_layernorm = RMSNorm(cfg.q_lora_rank, cfg.norm_eps)
            # W^UQ and W^QR stacked
            self.q_b_proj = Linear(cfg.q_lora_rank, h * (d_nope + d_rope), bias=False)
        else:
            self.q_proj = Linear(cfg.d_model, h * (d_nope + d_rope), bias=False)
        # W^DKV and W^KR stacked: the latent and the shared RoPE key
        self.kv_a_proj_with_mqa = Linear(cfg.d_model, cfg.kv_lora_rank + d_rope, bias=False)
        self.kv_a_layernorm = RMSNorm(cfg.kv_lora_rank, cfg.norm_eps)
        self.kv_b_proj = Linear(cfg.kv_lora_rank, h * (d_nope + d_v), bias=False)  # W^UK, W^UV
        self.o_proj = Linear(h * d_v, cfg.d_model, bias=False)
        if rope is None or rope.d_head != d_rope:  # the model's RoPE is sized for d_head
            rope = RotaryEmbedding(d_rope, rope.base if rope else cfg.rope_base,
                                   rope.layout if rope else "half")
        self.rope = rope
        self.scale = 1.0 / math.sqrt(d_nope + d_rope)

    def up_weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``W^UK`` (n_head, d_nope, d_c) and ``W^UV`` (n_head, d_v, d_c), views of kv_b_proj."""
        cfg = self.config
        w = self.kv_b_proj.weight.view(cfg.n_head, cfg.qk_nope_head_dim + cfg.v_head_dim, -1)
        return w[:, :cfg.qk_nope_head_dim], w[:, cfg.qk_nope_head_dim:]

    def project(self, x: torch.Tensor, positions: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """x: (b, s, d_model) -> q_nope (b, s, h, d_nope), q_rope (b, s, h, d_rope),
        c_kv (b, s, d_c), k_rope (b, s, d_rope), RoPE applied."""
        cfg, (b, s, _) = self.config, x.shape
        if cfg.q_lora_rank:
            q = self.q_b_proj(self.q_a_layernorm(self.q_a_proj(x)))
        else:
            q = self.q_proj(x)
        q_nope, q_rope = q.view(b, s, cfg.n_head, -1).split(
            [cfg.qk_nope_head_dim, cfg.qk_rope_head_dim], dim=-1)
        c_kv, k_rope = self.kv_a_proj_with_mqa(x).split(
            [cfg.kv_lora_rank, cfg.qk_rope_head_dim], dim=-1)
        cos, sin = self.rope(positions)  # (b, s, d_rope/2)
        q_rope = self.rope.rotate(q_rope, cos, sin)
        k_rope = self.rope.rotate(k_rope[:, :, None, :], cos, sin)[:, :, 0]  # one head for all
        return q_nope, q_rope, self.kv_a_layernorm(c_kv), k_rope

    def naive(self, q_nope: torch.Tensor, q_rope: torch.Tensor, c_kv: torch.Tensor,
              k_rope: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """Up-project the latent to per-head K and V, then plain attention -> (b, s, h, d_v)."""
        cfg, (b, T, _) = self.config, c_kv.shape
        k_nope, v = self.kv_b_proj(c_kv).view(b, T, cfg.n_head, -1).split(
            [cfg.qk_nope_head_dim, cfg.v_head_dim], dim=-1)  # (b, T, h, ·)
        k = torch.cat([k_nope, k_rope[:, :, None, :].expand(-1, -1, cfg.n_head, -1)], dim=-1)
        q = torch.cat([q_nope, q_rope], dim=-1)  # (b, s, h, d_nope + d_rope)
        out = naive_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                              mask=mask, causal=mask is None, scale=self.scale)
        return out.transpose(1, 2)

    def absorbed(self, q_nope: torch.Tensor, q_rope: torch.Tensor, c_kv: torch.Tensor,
                 k_rope: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """Attention on the latent (:func:`absorbed_attention`) -> (b, s, h, d_v)."""
        w_uk, w_uv = self.up_weights()
        return absorbed_attention(q_nope, q_rope, c_kv, k_rope, w_uk, w_uv, self.scale, mask)

    def forward(self, x: torch.Tensor, ctx: StepContext | None = None,
                layer_idx: int = 0) -> torch.Tensor:
        if x.dim() != 3 or x.shape[-1] != self.config.d_model:
            raise ValueError(f"MLA expects x (batch, seq, {self.config.d_model}), "
                             f"got {tuple(x.shape)}")
        b, s, _ = x.shape
        positions = step_positions(b, s, x.device) if ctx is None else ctx.positions
        q_nope, q_rope, c_kv, k_rope = self.project(x, positions)
        mask = None if ctx is None else ctx.mask  # (b | 1, 1, s, T) bool or None (= causal)
        cache = None if ctx is None else ctx.cache
        if cache is not None:  # only the latent and the RoPE key are stored
            cache.observe_queries(layer_idx, torch.cat([q_nope, q_rope], -1))  # (b, s, h, d_qk)
            c_kv, k_rope = cache.update(layer_idx, c_kv, k_rope)  # (b, T, d_c), (b, T, d_rope)
        absorb = self.absorb if self.absorb is not None else cache is not None
        out = (self.absorbed if absorb else self.naive)(q_nope, q_rope, c_kv, k_rope, mask)
        return self.o_proj(out.reshape(b, s, -1))


# ``GPTConfig(attention="mla")`` builds this layer with these kinds: ``GPT(config, kinds=LAYER_KINDS)``.
LAYER_KINDS = BASE_KINDS.with_attention("mla", MultiHeadLatentAttention)
