"""Transformer layers written from scratch: the pieces of chapter 02's GPT.

Every module has a typed forward with documented shapes; where PyTorch has a fused kernel
(``F.layer_norm``, ``scaled_dot_product_attention``) the module uses it and the readable
definition next to it is tested to agree. ``StepContext`` and the ``KVCache`` protocol
(:mod:`llmlab.nn.context`) are the seam between the model and its caches. Taught in chapter 02
(solutions/02_gpt).
"""

from llmlab.nn.attention import (
    CausalSelfAttention,
    attention,
    attention_mask,
    attention_scores,
    causal_attention,
    causal_mask,
    check_qkv,
    fast_attention,
    fast_causal_attention,
    padded_causal_mask,
)
from llmlab.nn.block import TransformerBlock, make_norm
from llmlab.nn.context import KVCache, StepContext, step_positions
from llmlab.nn.functional import (
    cross_entropy,
    fast_cross_entropy,
    gelu_tanh,
    log_softmax,
    silu,
    softmax,
)
from llmlab.nn.kinds import BASE_KINDS, LayerKinds
from llmlab.nn.linear import Embedding, Linear
from llmlab.nn.mlp import GeluMLP, SwiGLU, swiglu
from llmlab.nn.norm import LayerNorm, RMSNorm, layer_norm, rms_norm
from llmlab.nn.rope import (
    RotaryEmbedding,
    apply_rope,
    interleaved_to_half_permutation,
    rope_cos_sin,
    rope_frequencies,
)

__all__ = [
    "BASE_KINDS",
    "CausalSelfAttention",
    "Embedding",
    "GeluMLP",
    "KVCache",
    "LayerKinds",
    "LayerNorm",
    "Linear",
    "RMSNorm",
    "RotaryEmbedding",
    "StepContext",
    "SwiGLU",
    "TransformerBlock",
    "apply_rope",
    "attention",
    "attention_mask",
    "attention_scores",
    "causal_attention",
    "causal_mask",
    "check_qkv",
    "cross_entropy",
    "fast_attention",
    "fast_causal_attention",
    "fast_cross_entropy",
    "gelu_tanh",
    "interleaved_to_half_permutation",
    "layer_norm",
    "log_softmax",
    "make_norm",
    "padded_causal_mask",
    "rms_norm",
    "rope_cos_sin",
    "rope_frequencies",
    "silu",
    "softmax",
    "step_positions",
    "swiglu",
]
