"""Layer kinds: which attention and MLP module each name of a config builds.

``GPTConfig(attention="gqa", mlp="swiglu")`` names its layers; a :class:`LayerKinds` maps each
name to a factory. ``llmlab.nn`` knows its own kinds (:data:`BASE_KINDS`: attention ``"gqa"``
— MHA, GQA, MQA — and MLPs ``"gelu"``, ``"swiglu"``). A later chapter's package offers its kinds
as a value that extends these, and never by being imported into this one: ``llmlab.attention``'s
``LAYER_KINDS`` adds ``"mla"`` (chapter 03), ``llmlab.parallel``'s adds ``"moe"`` (chapter 04),
and a model is built with the kinds it needs: ``GPT(config, kinds=llmlab.attention.LAYER_KINDS)``.
A ``LayerKinds`` is immutable; nothing is registered anywhere at import time. Taught in chapter
02 (solutions/02_gpt).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from torch import nn

from llmlab.nn.attention import CausalSelfAttention
from llmlab.nn.mlp import GeluMLP, SwiGLU
from llmlab.nn.rope import RotaryEmbedding

AttentionFactory = Callable[[Any, "RotaryEmbedding | None"], nn.Module]  # (config, rope) -> layer
MLPFactory = Callable[[Any], nn.Module]  # config -> layer

# Where the kinds of later chapters live, for the error that names them (names, not imports).
PROVIDERS = {"mla": "llmlab.attention.LAYER_KINDS (chapter 03)",
             "moe": "llmlab.parallel.LAYER_KINDS (chapter 04)"}


@dataclass(frozen=True)
class LayerKinds:
    """Attention and MLP factories by kind. ``a | b`` holds both (``b`` wins on a clash)."""

    attention: Mapping[str, AttentionFactory]
    mlp: Mapping[str, MLPFactory]

    def __post_init__(self) -> None:
        object.__setattr__(self, "attention", MappingProxyType(dict(self.attention)))
        object.__setattr__(self, "mlp", MappingProxyType(dict(self.mlp)))

    def with_attention(self, kind: str, factory: AttentionFactory) -> LayerKinds:
        """These kinds plus attention ``kind`` built by ``factory(config, rope)``."""
        return LayerKinds({**self.attention, kind: factory}, self.mlp)

    def with_mlp(self, kind: str, factory: MLPFactory) -> LayerKinds:
        """These kinds plus MLP ``kind`` built by ``factory(config)``."""
        return LayerKinds(self.attention, {**self.mlp, kind: factory})

    def __or__(self, other: LayerKinds) -> LayerKinds:
        return LayerKinds({**self.attention, **other.attention}, {**self.mlp, **other.mlp})

    def build_attention(self, config, rope: RotaryEmbedding | None) -> nn.Module:
        """The attention layer ``config.attention`` names."""
        return _factory(self.attention, "attention", config.attention)(config, rope)

    def build_mlp(self, config) -> nn.Module:
        """The MLP ``config.mlp`` names."""
        return _factory(self.mlp, "mlp", config.mlp)(config)


def _factory(known: Mapping[str, Callable], what: str, kind: str) -> Callable:
    if kind in known:
        return known[kind]
    where = f"; {kind!r} comes with {PROVIDERS[kind]}: GPT(config, kinds=...)" \
        if kind in PROVIDERS else ""
    raise ValueError(f"unknown {what} kind {kind!r}: these layer kinds have {sorted(known)}{where}")


def gqa_attention(config, rope: RotaryEmbedding | None) -> nn.Module:
    """MHA, GQA or MQA by ``config.n_kv_head`` (:class:`CausalSelfAttention`), with Qwen2's
    q/k/v biases (``config.qkv_bias``) and Qwen3's per-head q/k RMSNorm (``config.qk_norm``)."""
    return CausalSelfAttention(config.d_model, config.n_head, config.n_kv_head, config.d_head,
                               bias=config.bias, rope=rope, qkv_bias=config.qkv_bias,
                               qk_norm=config.qk_norm, norm_eps=config.norm_eps)


def gelu_mlp(config) -> nn.Module:
    """GPT-2's MLP."""
    return GeluMLP(config.d_model, config.d_ff, bias=config.bias)


def swiglu_mlp(config) -> nn.Module:
    """Llama's MLP."""
    return SwiGLU(config.d_model, config.d_ff, bias=config.bias)


BASE_KINDS = LayerKinds({"gqa": gqa_attention}, {"gelu": gelu_mlp, "swiglu": swiglu_mlp})
