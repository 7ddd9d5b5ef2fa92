"""A pool of fixed-size KV blocks: a free list, reference counts, and a typed out-of-blocks error.

PagedAttention ("Efficient Memory Management for Large Language Model Serving with
PagedAttention", Kwon et al., arXiv 2309.06180) stores a sequence's keys and values in fixed-size
blocks that need not be adjacent, like virtual-memory pages. This file only hands out block ids;
:mod:`llmlab.kvcache.paged` owns the tensors and the per-sequence block tables.

Blocks are reference-counted so sequences can share them (a forked sample shares its parent's
prompt; prefix caching shares a system prompt across requests). A block whose count drops to zero
returns to the *tail* of the free queue and allocation takes from the *head*, so the queue is in
least-recently-freed order — which the prefix cache (:mod:`llmlab.kvcache.prefix`) uses as its LRU
eviction order. Taught in chapter 08 (solutions/08_kvcache).
"""

from __future__ import annotations

from collections import OrderedDict


class OutOfBlocksError(RuntimeError):
    """The pool has fewer free blocks than a request needs. A scheduler catches this and preempts.

    ``needed``: blocks the request asked for; ``free``: blocks that were available.
    """

    def __init__(self, needed: int, free: int) -> None:
        super().__init__(f"out of KV blocks: needed {needed}, {free} free — free or preempt a "
                         "sequence, or give the pool more blocks")
        self.needed, self.free = needed, free


def blocks_for(n_tokens: int, block_size: int) -> int:
    """Blocks needed to hold ``n_tokens`` tokens: ceil(n_tokens / block_size)."""
    return -(-n_tokens // block_size)


class BlockAllocator:
    """Hands out ids ``0..num_blocks-1``; a block is free exactly when its refcount is 0."""

    def __init__(self, num_blocks: int) -> None:
        if num_blocks < 1:
            raise ValueError(f"num_blocks must be >= 1, got {num_blocks}")
        self.num_blocks = num_blocks
        self.refcount = [0] * num_blocks  # block id -> number of block tables holding it
        self.free_queue: OrderedDict[int, None] = OrderedDict.fromkeys(range(num_blocks))

    @property
    def num_free(self) -> int:
        return len(self.free_queue)

    def allocate(self, n: int = 1) -> list[int]:
        """Take ``n`` blocks from the head of the free queue (refcount 1 each), all or none."""
        if n > self.num_free:
            raise OutOfBlocksError(n, self.num_free)
        blocks = []
        for _ in range(n):
            block, _ = self.free_queue.popitem(last=False)
            self._on_reuse(block)
            self.refcount[block] = 1
            blocks.append(block)
        return blocks

    def share(self, block: int) -> None:
        """One more table holds ``block`` (fork, or a prefix-cache hit on a free cached block)."""
        if self.refcount[block] == 0:
            del self.free_queue[block]
        self.refcount[block] += 1

    def release(self, block: int) -> None:
        """One table lets go of ``block``; at zero it goes to the tail of the free queue."""
        if self.refcount[block] <= 0:
            raise ValueError(f"block {block} is already free")
        self.refcount[block] -= 1
        if self.refcount[block] == 0:
            self.free_queue[block] = None

    def _on_reuse(self, block: int) -> None:
        """Hook: a free block is about to be overwritten (the prefix cache forgets its hash)."""


def replay(allocator_cls: type, num_blocks: int, ops: list[tuple[str, int]]) -> list[object]:
    """Run ``ops`` — ("allocate", n), ("share", block), ("release", block) — on a fresh allocator.

    Returns, per op, what it returned (allocated ids; ``("OutOfBlocksError", needed, free)`` when
    it raised that) and ``num_free`` after it: the trace two allocators must agree on.
    """
    alloc = allocator_cls(num_blocks)
    trace: list[object] = []
    for name, arg in ops:
        try:
            result = getattr(alloc, name)(arg)
        except OutOfBlocksError as err:
            result = ("OutOfBlocksError", err.needed, err.free)
        trace.append((result, alloc.num_free))
    return trace
