"""The pre-norm transformer block: x + Attn(Norm(x)), then x + MLP(Norm(x)).

Pre-norm (normalise the input of each sublayer, keep the residual stream un-normalised) is what
GPT-2 and every Llama-family model use; it trains stably without warmup tricks
(Xiong et al., "On Layer Normalization in the Transformer Architecture", arXiv:2002.04745).
Taught in chapter 02 (solutions/02_gpt).
"""

from __future__ import annotations

import torch
from torch import nn

from llmlab.nn.context import StepContext
from llmlab.nn.kinds import BASE_KINDS, LayerKinds
from llmlab.nn.norm import LayerNorm, RMSNorm
from llmlab.nn.rope import RotaryEmbedding


def make_norm(kind: str, d: int, eps: float, bias: bool = True) -> nn.Module:
    """``"layernorm"`` -> LayerNorm, ``"rmsnorm"`` -> RMSNorm."""
    if kind == "layernorm":
        return LayerNorm(d, eps, bias=bias)
    if kind == "rmsnorm":
        return RMSNorm(d, eps)
    raise ValueError(f"unknown norm {kind!r}; expected 'layernorm' or 'rmsnorm'")


class TransformerBlock(nn.Module):
    """One pre-norm block built from a ``GPTConfig``; ``kinds`` builds the attention and the MLP
    the config names (:mod:`llmlab.nn.kinds`).

    forward(x: (batch, seq, d_model), ctx: StepContext | None, layer_idx) -> (batch, seq, d_model);
    the step context (positions, mask, KV cache) goes to the attention.
    """

    def __init__(self, config, rope: RotaryEmbedding | None = None,
                 kinds: LayerKinds = BASE_KINDS) -> None:
        super().__init__()
        self.norm1 = make_norm(config.norm, config.d_model, config.norm_eps, config.bias)
        self.attn = kinds.build_attention(config, rope)
        self.norm2 = make_norm(config.norm, config.d_model, config.norm_eps, config.bias)
        self.mlp = kinds.build_mlp(config)

    def forward(self, x: torch.Tensor, ctx: StepContext | None = None,
                layer_idx: int = 0) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), ctx, layer_idx)
        return x + self.mlp(self.norm2(x))
