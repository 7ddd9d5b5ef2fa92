"""Attention variants and long context: the pieces of chapter 03 (solutions/03_attention).

Every variant has a readable reference and, where one exists, an efficient form tested to agree
with it (outputs and gradients):

- MHA / MQA / GQA — ``CausalSelfAttention`` (from ``llmlab.nn``, parameterised by ``n_kv_head``),
  :func:`repeat_kv`, :func:`grouped_attention` (no KV copies);
- MLA — :class:`MultiHeadLatentAttention`, naive and weight-absorbed forms, latent-only cache;
  ``GPT(GPTConfig(attention="mla"), kinds=LAYER_KINDS)`` builds a model with it;
- sliding window + attention sinks — :func:`sliding_window_mask`,
  :func:`sliding_window_attention`, :func:`sliding_window_context` (a model's step context);
- block-sparse — :func:`block_sparse_attention`; Native Sparse Attention —
  :class:`NativeSparseAttention`;
- linear attention — parallel, recurrent and chunked forms;
- FlashAttention — :func:`flash_attention` (tiled, online softmax, recomputing backward) and
  :func:`flash_decode` (split-KV);
- long context — :class:`RopeScaling` (PI, NTK-aware, YaRN) and ALiBi;
- KV bytes per token of each variant on real configs — :class:`KVSpec`, ``REAL_CONFIGS``.
"""

from llmlab.attention.alibi import alibi_bias, alibi_slopes
from llmlab.attention.flash import (
    FlashAttentionFunction,
    flash_attention,
    flash_attention_backward,
    flash_attention_forward,
)
from llmlab.attention.flash_decoding import flash_decode, merge_partials
from llmlab.attention.gqa import grouped_attention, repeat_kv
from llmlab.attention.inspect import attention_maps, layer_attention
from llmlab.attention.kv_bytes import REAL_CONFIGS, KVSpec, variants_of
from llmlab.attention.linear import (
    elu_feature_map,
    linear_attention_chunked,
    linear_attention_parallel,
    linear_attention_recurrent,
)
from llmlab.attention.masks import block_layout_to_mask, causal_mask, sliding_window_mask
from llmlab.attention.memory import peak_memory
from llmlab.attention.mla import LAYER_KINDS, MLAConfig, MultiHeadLatentAttention, absorbed_attention
from llmlab.attention.naive import attention_scores, naive_attention
from llmlab.attention.nsa import NativeSparseAttention
from llmlab.attention.online_softmax import online_logsumexp, online_softmax
from llmlab.attention.rope_scaling import (
    RopeScaling,
    ScaledRotaryEmbedding,
    scaled_frequencies,
    set_rope_scaling,
    yarn_ramp,
)
from llmlab.attention.sliding import (
    sliding_window_attention,
    sliding_window_context,
    sliding_window_reference,
)
from llmlab.attention.sparse import (
    block_sparse_attention,
    block_sparse_reference,
    local_global_layout,
)
from llmlab.nn.attention import CausalSelfAttention, causal_attention, fast_causal_attention

__all__ = [
    "LAYER_KINDS",
    "REAL_CONFIGS",
    "CausalSelfAttention",
    "FlashAttentionFunction",
    "KVSpec",
    "MLAConfig",
    "MultiHeadLatentAttention",
    "NativeSparseAttention",
    "RopeScaling",
    "ScaledRotaryEmbedding",
    "absorbed_attention",
    "alibi_bias",
    "alibi_slopes",
    "attention_maps",
    "attention_scores",
    "block_layout_to_mask",
    "block_sparse_attention",
    "block_sparse_reference",
    "causal_attention",
    "causal_mask",
    "elu_feature_map",
    "fast_causal_attention",
    "flash_attention",
    "flash_attention_backward",
    "flash_attention_forward",
    "flash_decode",
    "grouped_attention",
    "layer_attention",
    "linear_attention_chunked",
    "linear_attention_parallel",
    "linear_attention_recurrent",
    "local_global_layout",
    "merge_partials",
    "naive_attention",
    "online_logsumexp",
    "online_softmax",
    "peak_memory",
    "repeat_kv",
    "scaled_frequencies",
    "set_rope_scaling",
    "sliding_window_attention",
    "sliding_window_context",
    "sliding_window_mask",
    "sliding_window_reference",
    "variants_of",
    "yarn_ramp",
]
