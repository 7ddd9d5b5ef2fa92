"""The pre-norm transformer block: x + Attn(Norm(x)), then x + MLP(Norm(x)).

Pre-norm (normalise the input of each sublayer, keep the residual stream un-normalised) is what
GPT-2 and every Llama-family model use; it trains stably without warmup tricks
(Xiong et al., "On Layer Normalization in the Transformer Architecture", arXiv:2002.04745).
Taught in chapter 02 (solutions/02_gpt).
"""

from __future__ import annotations

import torch
from torch import nn

from llmlab.nn.attention import CausalSelfAttention
from llmlab.nn.context import StepContext
from llmlab.nn.mlp import GeluMLP, SwiGLU
from llmlab.nn.norm import LayerNorm, RMSNorm
from llmlab.nn.rope import RotaryEmbedding


def make_norm(kind: str, d: int, eps: float, bias: bool = True) -> nn.Module:
    """``"layernorm"`` -> LayerNorm, ``"rmsnorm"`` -> RMSNorm."""
    if kind == "layernorm":
        return LayerNorm(d, eps, bias=bias)
    if kind == "rmsnorm":
        return RMSNorm(d, eps)
    raise ValueError(f"unknown norm {kind!r}; expected 'layernorm' or 'rmsnorm'")


# MLP kinds that later chapters' packages add (``register_mlp``): kind -> factory(config).
# ``llmlab.parallel`` registers "moe"; nn and model never import it.
MLP_FACTORIES: dict = {}


def register_mlp(kind: str, factory) -> None:
    """Let ``GPTConfig(mlp=kind)`` build ``factory(config)`` as each block's MLP."""
    MLP_FACTORIES[kind] = factory


def make_mlp(kind: str, d_model: int, d_ff: int, bias: bool) -> nn.Module:
    """``"gelu"`` -> GeluMLP, ``"swiglu"`` -> SwiGLU."""
    if kind == "gelu":
        return GeluMLP(d_model, d_ff, bias=bias)
    if kind == "swiglu":
        return SwiGLU(d_model, d_ff, bias=bias)
    if kind == "moe":
        raise ValueError("mlp='moe' is registered by llmlab.parallel: import llmlab.parallel first")
    raise ValueError(f"unknown mlp {kind!r}; expected 'gelu' or 'swiglu'")


def make_attention(config, rope: RotaryEmbedding | None) -> nn.Module:
    """The attention a config asks for: ``"gqa"`` (MHA/GQA/MQA) or ``"mla"`` (chapter 03)."""
    if config.attention == "gqa":
        return CausalSelfAttention(
            config.d_model, config.n_head, config.n_kv_head, config.d_head,
            bias=config.bias, rope=rope,
        )
    if config.attention == "mla":
        from llmlab.attention import MultiHeadLatentAttention  # lazy: chapter 03's package

        return MultiHeadLatentAttention(config, rope)
    raise ValueError(f"unknown attention {config.attention!r}; expected 'gqa' or 'mla'")


class TransformerBlock(nn.Module):
    """One pre-norm block built from a ``GPTConfig``.

    forward(x: (batch, seq, d_model), ctx: StepContext | None, layer_idx) -> (batch, seq, d_model);
    the step context (positions, mask, KV cache) goes to the attention.
    """

    def __init__(self, config, rope: RotaryEmbedding | None = None) -> None:
        super().__init__()
        self.norm1 = make_norm(config.norm, config.d_model, config.norm_eps, config.bias)
        self.attn = make_attention(config, rope)
        self.norm2 = make_norm(config.norm, config.d_model, config.norm_eps, config.bias)
        self.mlp = (MLP_FACTORIES[config.mlp](config) if config.mlp in MLP_FACTORIES else
                    make_mlp(config.mlp, config.d_model, config.d_ff, config.bias))

    def forward(self, x: torch.Tensor, ctx: StepContext | None = None,
                layer_idx: int = 0) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), ctx, layer_idx)
        return x + self.mlp(self.norm2(x))
