"""KV caches: contiguous, paged, prefix-cached, evicting and quantized; cached generation.

Every cache implements the protocol of :mod:`llmlab.kvcache.base`: ``ctx = cache.prepare(...)``
builds a step's context, the model calls ``update`` (and ``observe_queries``) on ``ctx.cache`` in
each layer, and ``cache.commit(ctx)`` ends the step; so any of them plugs into
``llmlab.model.GPT`` and the row caches into :func:`llmlab.model.generate`. The contiguous
cache lives beside the model (:mod:`llmlab.model.cache`, re-exported here) because ``generate``
decodes through it by default; :func:`generate_paged` runs the same decode loop over a
:class:`PagedKVCache`. Taught in chapter 08 (solutions/08_kvcache); chapter 09 (serving)
schedules requests over :class:`PagedKVCache`.
"""

from llmlab.kvcache.attention import decode_attention, paged_attention
from llmlab.kvcache.base import DecodeCache, KVCache, StepContext, padded_causal_mask
from llmlab.kvcache.blocks import BlockAllocator, OutOfBlocksError, blocks_for
from llmlab.kvcache.eviction import EvictingKVCache, HeavyHitterCache, SinkWindowCache
from llmlab.kvcache.generate import generate_paged
from llmlab.kvcache.memory import (
    LayoutWaste,
    kv_cache_bytes,
    kv_spec,
    layout_waste,
    mixed_lengths,
)
from llmlab.kvcache.paged import PagedKVCache, copy_on_write, token_slots
from llmlab.kvcache.prefix import (
    PrefixCacheStats,
    PrefixCachingAllocator,
    hash_block,
    prefix_block_hashes,
)
from llmlab.kvcache.quantized import QuantizedKVCache, kivi_quantize, pack_codes, unpack_codes
from llmlab.model.cache import ContiguousKVCache, append_kv

__all__ = [
    "BlockAllocator",
    "ContiguousKVCache",
    "DecodeCache",
    "EvictingKVCache",
    "HeavyHitterCache",
    "KVCache",
    "LayoutWaste",
    "OutOfBlocksError",
    "PagedKVCache",
    "PrefixCacheStats",
    "PrefixCachingAllocator",
    "QuantizedKVCache",
    "SinkWindowCache",
    "StepContext",
    "append_kv",
    "blocks_for",
    "copy_on_write",
    "decode_attention",
    "generate_paged",
    "hash_block",
    "kivi_quantize",
    "kv_cache_bytes",
    "kv_spec",
    "layout_waste",
    "mixed_lengths",
    "pack_codes",
    "padded_causal_mask",
    "paged_attention",
    "prefix_block_hashes",
    "token_slots",
    "unpack_codes",
]
