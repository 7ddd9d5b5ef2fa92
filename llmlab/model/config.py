"""``GPTConfig``: one dataclass for GPT-2-style and Llama-style decoder-only transformers.

GPT-2 style: learned absolute positions, LayerNorm, GELU MLP, biases, tied embeddings
(Radford et al. 2019). Llama style: RoPE, RMSNorm, SwiGLU, grouped KV heads, no biases
(Touvron et al., "LLaMA", arXiv:2302.13971; Grattafiori et al., "The Llama 3 Herd of Models",
arXiv:2407.21783). Unknown keys raise ``ValueError`` naming the key.
Taught in chapter 02 (solutions/02_gpt).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from llmlab.nn.rope import check_rope_scaling
from llmlab.utils import reject_unknown_keys

_CHOICES = {
    "norm": ("layernorm", "rmsnorm"),
    "mlp": ("gelu", "swiglu", "moe"),  # "moe" is built by llmlab.parallel (chapter 04)
    "position": ("learned", "rope"),
    "rope_layout": ("half", "interleaved"),
    "attention": ("gqa", "mla"),
}


@reject_unknown_keys
@dataclass
class GPTConfig:
    """Shape and architecture of a decoder-only transformer (defaults: a tiny Llama-style model).

    ``n_kv_head`` defaults to ``n_head`` (multi-head attention); ``d_head`` to
    ``d_model // n_head``; ``d_ff`` to ``4 * d_model`` for GELU and to ``8/3 * d_model`` rounded
    up to a multiple of 64 for SwiGLU (equal FLOPs). ``attention_options`` holds extra keyword
    arguments of attention variants (e.g. the latent sizes of ``"mla"``, chapter 03);
    ``mlp_options`` those of registered MLP kinds (``"moe"``: ``llmlab.parallel.MoE``, chapter 04).
    ``qkv_bias``, ``qk_norm`` and ``rope_scaling`` are the features of Qwen2, Qwen3 and Llama 3.1
    checkpoints (:mod:`llmlab.model.hf`); all are off by default.
    """

    vocab_size: int = 4096
    block_size: int = 256  # maximum sequence length (learned positions / RoPE table)
    n_layer: int = 4
    n_head: int = 4
    n_kv_head: int | None = None
    d_model: int = 128
    d_head: int | None = None
    d_ff: int | None = None
    norm: str = "rmsnorm"
    mlp: str = "swiglu"
    position: str = "rope"
    rope_base: float = 10000.0
    rope_layout: str = "half"
    attention: str = "gqa"
    attention_options: dict[str, Any] = field(default_factory=dict)
    mlp_options: dict[str, Any] = field(default_factory=dict)  # e.g. MoE experts (chapter 04)
    rope_scaling: dict[str, Any] = field(default_factory=dict)  # {} or Llama 3.1's "llama3"
    tie_embeddings: bool = True
    bias: bool = False
    qkv_bias: bool = False  # biases on q/k/v only (Qwen2); ``bias`` puts them everywhere
    qk_norm: bool = False  # per-head RMSNorm of queries and keys before RoPE (Qwen3)
    norm_eps: float = 1e-6
    init_std: float = 0.02

    def __post_init__(self) -> None:
        for key, allowed in _CHOICES.items():
            if getattr(self, key) not in allowed:
                raise ValueError(f"GPTConfig.{key}={getattr(self, key)!r}; expected {allowed}")
        for key in ("vocab_size", "block_size", "n_layer", "n_head", "d_model"):
            if int(getattr(self, key)) <= 0:
                raise ValueError(f"GPTConfig.{key} must be positive, got {getattr(self, key)}")
        self.n_kv_head = self.n_kv_head or self.n_head
        if self.n_head % self.n_kv_head:
            raise ValueError(
                f"n_head ({self.n_head}) must be a multiple of n_kv_head ({self.n_kv_head})"
            )
        if self.d_head is None:
            if self.d_model % self.n_head:
                raise ValueError(f"d_model ({self.d_model}) not divisible by n_head ({self.n_head})")
            self.d_head = self.d_model // self.n_head
        for key in ("qkv_bias", "qk_norm"):
            if getattr(self, key) and self.attention != "gqa":
                raise ValueError(f"GPTConfig.{key} is an option of attention='gqa', not "
                                 f"{self.attention!r}")
        check_rope_scaling(self.rope_scaling)
        if self.rope_scaling and self.position != "rope":
            raise ValueError(f"rope_scaling {self.rope_scaling} needs position='rope'")
        if self.position == "rope" and self.d_head % 2:
            raise ValueError(f"RoPE needs an even d_head, got {self.d_head}")
        if self.d_ff is None:
            self.d_ff = 4 * self.d_model if self.mlp == "gelu" else _swiglu_width(self.d_model)

    @property
    def n_rep(self) -> int:
        """Query heads per KV head (the GQA group size)."""
        return self.n_head // self.n_kv_head

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> GPTConfig:
        return cls(**d)

    def replace(self, **changes: Any) -> GPTConfig:
        """A copy with some fields changed (derived defaults recomputed if set to None)."""
        return GPTConfig(**{**self.to_dict(), **changes})

    @classmethod
    def gpt2_style(cls, **overrides: Any) -> GPTConfig:
        """Learned positions, LayerNorm (eps 1e-5), GELU, biases, tied embeddings."""
        base = dict(norm="layernorm", mlp="gelu", position="learned", bias=True,
                    tie_embeddings=True, norm_eps=1e-5)
        return cls(**{**base, **overrides})

    @classmethod
    def llama_style(cls, **overrides: Any) -> GPTConfig:
        """RoPE (half layout), RMSNorm, SwiGLU, no biases; GQA via ``n_kv_head``."""
        base = dict(norm="rmsnorm", mlp="swiglu", position="rope", bias=False, norm_eps=1e-6)
        return cls(**{**base, **overrides})


def _swiglu_width(d_model: int, multiple_of: int = 64) -> int:
    """8/3 d_model rounded up to a multiple (Llama's rule), so SwiGLU ≈ GELU-4x FLOPs."""
    hidden = int(8 * d_model / 3)
    return multiple_of * ((hidden + multiple_of - 1) // multiple_of)
