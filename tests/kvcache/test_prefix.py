"""Prefix caching: chained hashes, reuse, refcounts, LRU eviction, hit rate; output unchanged."""

from __future__ import annotations

import torch

from llmlab.kvcache import (
    PagedKVCache,
    PrefixCachingAllocator,
    generate_paged,
    hash_block,
    prefix_block_hashes,
)
from llmlab.model import generate


def test_hashes_are_chained_over_the_prefix():
    a = prefix_block_hashes([1, 2, 3, 4, 5, 6, 7], block_size=3)
    assert len(a) == 2  # the partial block [7] gets no hash
    assert a[0] == hash_block(None, [1, 2, 3]) and a[1] == hash_block(a[0], [4, 5, 6])
    b = prefix_block_hashes([9, 9, 9, 4, 5, 6], block_size=3)
    assert b[1] != a[1]  # same tokens after a different prefix: a different block
    assert prefix_block_hashes([1, 2, 3, 4, 5, 6], 3) == a
    assert hash_block(None, [1, 2]) != hash_block(None, [2, 1])


def test_lru_eviction_of_unreferenced_blocks():
    alloc = PrefixCachingAllocator(4)
    blocks = alloc.allocate(3)
    hashes = [bytes([i]) * 32 for i in range(3)]
    for b, h in zip(blocks, hashes):
        alloc.register(b, h)
    for b in reversed(blocks):  # a finished sequence frees its tail first
        alloc.release(b)
    assert alloc.num_cached == 3 and alloc.num_free == 4
    assert alloc.allocate(2) == [3, 2]  # the never-used block, then the LRU cached one (tail)
    assert alloc.stats.evictions == 1 and hashes[2] not in alloc.block_of
    assert alloc.lookup(hashes) == [0, 1]  # the prefix survives; lookup stops at the gap
    assert alloc.refcount[:2] == [1, 1] and alloc.num_free == 0
    assert (alloc.stats.queries, alloc.stats.hits) == (3, 2)


def _system_prompt_workload(vocab: int) -> list[list[int]]:
    g = torch.Generator().manual_seed(4)
    system = torch.randint(0, vocab, (21,), generator=g).tolist()
    return [system + torch.randint(0, vocab, (n,), generator=g).tolist() for n in (3, 8, 5, 1)]


def test_prefix_cached_generation_equals_uncached(model, vocab):
    prompts = _system_prompt_workload(vocab)
    cache = PagedKVCache(model.config.n_layer, num_blocks=40, block_size=4, prefix_caching=True)
    first = generate_paged(model, prompts[:1], cache, max_new_tokens=12)
    rest = generate_paged(model, prompts[1:], cache, max_new_tokens=12, seq_ids=[1, 2, 3])
    for prompt, got in zip(prompts, first + rest):
        want = generate(model, torch.tensor([prompt]), max_new_tokens=12, use_cache=False)[0, len(prompt):]
        assert got == want.tolist()
    stats = cache.allocator.stats
    # the second batch finds the 5 full system-prompt blocks (21 tokens) for each of 3 prompts
    assert stats.hits == 3 * 5
    assert 0 < stats.hit_rate < 1


def test_cache_hit_skips_the_prefix_and_stops_before_the_last_token(model, vocab):
    prompt = _system_prompt_workload(vocab)[0]  # 24 tokens = 6 full blocks of 4
    cache = PagedKVCache(model.config.n_layer, num_blocks=20, block_size=4, prefix_caching=True)
    generate_paged(model, [prompt], cache, max_new_tokens=3)
    assert cache.add_sequence("again", prompt) == 20  # at most len - 1 tokens: 5 blocks
    assert cache.add_sequence("other", [prompt[0] + 1] + prompt[1:]) == 0


def test_evicted_blocks_are_never_served_as_hits(model, vocab):
    """A pool too small to keep every prefix: LRU evicts, reused blocks lose their hash."""
    prompts = _system_prompt_workload(vocab)
    g = torch.Generator().manual_seed(5)
    other = torch.randint(0, vocab, (24,), generator=g).tolist()
    cache = PagedKVCache(model.config.n_layer, num_blocks=10, block_size=4, prefix_caching=True)
    order = [prompts[0], other, prompts[1], other + [1, 2], prompts[2]]
    for i, prompt in enumerate(order):
        got = generate_paged(model, [prompt], cache, max_new_tokens=6, seq_ids=[i])[0]
        want = generate(model, torch.tensor([prompt]), max_new_tokens=6, use_cache=False)[0, len(prompt):]
        assert got == want.tolist()
    assert cache.allocator.stats.evictions > 0 and cache.allocator.stats.hits > 0
