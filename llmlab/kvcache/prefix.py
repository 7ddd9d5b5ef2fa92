"""Prefix caching: reuse the KV blocks of a prompt prefix another request already computed.

A full block is named by a hash chained over the previous block's hash and its own tokens, so
equal hashes mean equal *whole prefixes*, not only equal blocks (the same tokens after a different
prefix have different keys and values). This is vLLM's automatic prefix caching ("Efficient Memory
Management for Large Language Model Serving with PagedAttention", arXiv 2309.06180, and vLLM's
design doc); SGLang's RadixAttention ("SGLang: Efficient Execution of Structured Language Model
Programs", arXiv 2312.07104) keeps the same information in a radix tree over token ids.

Cached blocks whose refcount is zero stay in the free queue with their hash: a later request can
revive them, and allocation evicts them least-recently-freed first (LRU). Only full blocks are
cached; a partial last block is private to its sequence. Taught in chapter 08
(solutions/08_kvcache).
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Sequence
from dataclasses import dataclass

from llmlab.kvcache.blocks import BlockAllocator


def hash_block(prev_hash: bytes | None, tokens: Sequence[int]) -> bytes:
    """SHA-256 of the previous block's hash (empty for the first block) and this block's tokens."""
    h = hashlib.sha256(prev_hash or b"")
    h.update(struct.pack(f"<{len(tokens)}q", *tokens))
    return h.digest()


def prefix_block_hashes(tokens: Sequence[int], block_size: int,
                        salt: bytes | None = None) -> list[bytes]:
    """Chained hashes of the full blocks of ``tokens`` (a trailing partial block gets none).

    ``salt`` starts the chain: blocks whose keys and values differ for the same tokens (another
    LoRA adapter's) never match (vLLM's "extra keys" of a block hash).
    """
    hashes: list[bytes] = []
    prev = salt
    for start in range(0, len(tokens) - block_size + 1, block_size):
        prev = hash_block(prev, tokens[start:start + block_size])
        hashes.append(prev)
    return hashes


@dataclass
class PrefixCacheStats:
    """Counters since creation: blocks looked up, blocks found, cached blocks evicted."""

    queries: int = 0
    hits: int = 0
    evictions: int = 0

    @property
    def hit_rate(self) -> float:
        return self.hits / self.queries if self.queries else 0.0


class PrefixCachingAllocator(BlockAllocator):
    """A :class:`BlockAllocator` that remembers which full blocks hold which chained hash."""

    def __init__(self, num_blocks: int) -> None:
        super().__init__(num_blocks)
        self.block_of: dict[bytes, int] = {}  # chained hash -> block holding that prefix block
        self.hash_of: dict[int, bytes] = {}  # block -> its hash (only full, cached blocks)
        self.stats = PrefixCacheStats()

    def lookup(self, hashes: Sequence[bytes]) -> list[int]:
        """Take a reference on the longest cached run of ``hashes`` and return its blocks."""
        found: list[int] = []
        for h in hashes:
            block = self.block_of.get(h)
            if block is None:
                break
            self.share(block)
            found.append(block)
        self.stats.queries += len(hashes)
        self.stats.hits += len(found)
        return found

    def register(self, block: int, h: bytes) -> None:
        """``block`` is now full and holds the prefix block named ``h``; cache it."""
        if h not in self.block_of and block not in self.hash_of:
            self.block_of[h] = block
            self.hash_of[block] = h

    @property
    def num_cached(self) -> int:
        return len(self.hash_of)

    def _on_reuse(self, block: int) -> None:
        h = self.hash_of.pop(block, None)
        if h is not None:
            del self.block_of[h]
            self.stats.evictions += 1
