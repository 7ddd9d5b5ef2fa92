"""KV caches: contiguous, paged, prefix-cached, evicting and quantized; cached generation.

Every cache implements the protocol of :mod:`llmlab.kvcache.base` that the model's attention calls
(``update``, ``attn_mask``, ``offset``), so any of them plugs into ``llmlab.model.GPT`` and
:func:`generate`. Taught in chapter 08 (solutions/08_kvcache); chapter 09 (serving) schedules
requests over :class:`PagedKVCache`.
"""

from llmlab.kvcache.attention import decode_attention, paged_attention
from llmlab.kvcache.base import KVCache, NoCache, padded_causal_mask
from llmlab.kvcache.blocks import BlockAllocator, OutOfBlocksError, blocks_for
from llmlab.kvcache.contiguous import ContiguousKVCache, append_kv
from llmlab.kvcache.eviction import EvictingKVCache, HeavyHitterCache, SinkWindowCache
from llmlab.kvcache.generate import decode_loop, generate, generate_paged, make_sampler
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
from llmlab.kvcache.quantized import (
    QuantizedKVCache,
    dequantize,
    kivi_quantize,
    pack_codes,
    quantize,
    unpack_codes,
)

__all__ = [
    "BlockAllocator",
    "ContiguousKVCache",
    "EvictingKVCache",
    "HeavyHitterCache",
    "KVCache",
    "LayoutWaste",
    "NoCache",
    "OutOfBlocksError",
    "PagedKVCache",
    "PrefixCacheStats",
    "PrefixCachingAllocator",
    "QuantizedKVCache",
    "SinkWindowCache",
    "append_kv",
    "blocks_for",
    "copy_on_write",
    "decode_attention",
    "decode_loop",
    "dequantize",
    "generate",
    "generate_paged",
    "hash_block",
    "kivi_quantize",
    "kv_cache_bytes",
    "kv_spec",
    "layout_waste",
    "make_sampler",
    "mixed_lengths",
    "pack_codes",
    "padded_causal_mask",
    "paged_attention",
    "prefix_block_hashes",
    "quantize",
    "token_slots",
    "unpack_codes",
]
