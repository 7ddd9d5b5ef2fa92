"""Paged cache: allocation, typed out-of-blocks, copy-on-write forks, equality with contiguous."""

from __future__ import annotations

import pytest
import torch

from llmlab.kvcache import (
    BlockAllocator,
    ContiguousKVCache,
    OutOfBlocksError,
    PagedKVCache,
    generate_paged,
)
from llmlab.kvcache.attention import decode_attention, paged_attention
from llmlab.model import generate


def test_allocator_free_list_and_refcounts():
    alloc = BlockAllocator(4)
    a = alloc.allocate(3)
    assert a == [0, 1, 2] and alloc.num_free == 1
    alloc.share(a[1])
    alloc.release(a[1])
    assert alloc.num_free == 1  # still held once
    alloc.release(a[1])
    alloc.release(a[0])
    assert alloc.allocate(2) == [3, 1]  # free queue order: never-used 3, then 1, then 0
    with pytest.raises(OutOfBlocksError) as err:
        alloc.allocate(2)
    assert (err.value.needed, err.value.free) == (2, 1)
    with pytest.raises(ValueError, match="already free"):
        BlockAllocator(2).release(0)


def _kv(batch: int, t: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, t, 2, 8, generator=g), torch.randn(batch, t, 2, 8, generator=g)


def _step(cache, rows, t: int):
    """A step's context for ``t`` new tokens per row: a paged cache names its rows."""
    if isinstance(cache, PagedKVCache):
        return cache.prepare(rows, t)
    return cache.prepare(torch.zeros(len(rows), t, dtype=torch.long))


def test_paged_equals_contiguous_on_tensors():
    paged = PagedKVCache(n_layer=2, num_blocks=16, block_size=4)
    contiguous = ContiguousKVCache(n_layer=2)
    for s in range(3):
        paged.add_sequence(s)
    for step, t in enumerate([7, 1, 1, 5, 1]):
        k, v = _kv(3, t, step)
        ctxs = [_step(c, [0, 1, 2], t) for c in (paged, contiguous)]
        assert torch.equal(ctxs[0].positions, ctxs[1].positions) and ctxs[0].mask is None
        for layer in range(2):
            got = ctxs[0].cache.update(layer, k + layer, v)
            want = ctxs[1].cache.update(layer, k + layer, v)
            assert all(torch.equal(g, w) for g, w in zip(got, want))
        paged.commit(ctxs[0])
        contiguous.commit(ctxs[1])
    assert [paged.lengths[s] for s in range(3)] == [contiguous.offset] * 3 == [15] * 3
    assert paged.used_blocks() == 3 * 4  # ceil(15 / 4) blocks per sequence


def test_ragged_rows_gather_their_own_tokens():
    cache = PagedKVCache(n_layer=1, num_blocks=12, block_size=3)
    for s in "abc":
        cache.add_sequence(s)
    lens, rows = [5, 2, 7], {}
    ctx = cache.prepare(["a", "b", "c"], lens, last_logits=True)
    assert ctx.logits_at.tolist() == [4, 1, 6]  # each row's last real token
    k, v = _kv(3, 7, 0)
    got_k, _ = ctx.cache.update(0, k, v)  # right-padded input: row b has lens[b] real tokens
    for b, n in enumerate(lens):
        assert torch.equal(got_k[b, :n], k[b, :n])
        rows[b] = k[b, :n]
    assert ctx.mask.shape == (3, 1, 7, 7)
    assert ctx.mask[1, 0, 1].tolist() == [True, True] + [False] * 5  # b's 2nd token: 2 keys
    cache.commit(ctx)
    ctx = cache.prepare(["a", "b", "c"], 1)  # one decode step: rows at different positions
    assert ctx.positions.tolist() == [[5], [2], [7]]
    k2, v2 = _kv(3, 1, 1)
    got_k, _ = ctx.cache.update(0, k2, v2)
    for b, n in enumerate(lens):
        assert torch.equal(got_k[b, :n + 1], torch.cat([rows[b], k2[b]]))
    assert ctx.mask[:, 0, 0].sum(-1).tolist() == [6, 3, 8]


def test_commit_is_explicit_and_checked():
    cache = PagedKVCache(n_layer=2, num_blocks=8, block_size=4)
    cache.add_sequence("a")
    ctx = cache.prepare(["a"], 3)
    ctx.cache.update(0, *_kv(1, 3, 0))
    with pytest.raises(ValueError, match=r"layers \[1\] did not store"):
        cache.commit(ctx)
    assert cache.lengths["a"] == 0  # nothing counted before the commit
    ctx.cache.update(1, *_kv(1, 3, 0))
    cache.commit(ctx)
    assert cache.lengths["a"] == 3
    with pytest.raises(ValueError, match="latest prepare"):
        cache.commit(ctx)
    with pytest.raises(ValueError, match="add_sequence"):
        cache.prepare(["b"], 1)


def test_out_of_blocks_is_typed_and_changes_nothing():
    cache = PagedKVCache(n_layer=1, num_blocks=3, block_size=4)
    cache.add_sequence("a")
    cache.add_sequence("b")
    with pytest.raises(OutOfBlocksError) as err:
        cache.prepare(["a", "b"], [8, 5])
    assert err.value.needed == 4 and err.value.free == 3
    assert cache.blocks_needed("a", 8) + cache.blocks_needed("b", 5) == 4
    assert cache.allocator.num_free == 3 and cache.tables == {"a": [], "b": []}
    cache.prepare(["a", "b"], [8, 1])  # 3 blocks fit
    assert cache.num_free_blocks == 0


def test_fork_copies_on_write():
    cache = PagedKVCache(n_layer=2, num_blocks=8, block_size=4)
    cache.add_sequence("p")
    prompt = _kv(1, 6, 0)
    ctx = cache.prepare(["p"], 6)
    for layer in range(2):
        ctx.cache.update(layer, *prompt)
    cache.commit(ctx)
    cache.fork("p", "c")
    shared_tail = cache.tables["p"][-1]
    assert cache.tables["c"] == cache.tables["p"] and cache.allocator.refcount[shared_tail] == 2
    new = _kv(2, 1, 1)  # different next tokens for parent and child
    ctx = cache.prepare(["p", "c"], 1)
    for layer in range(2):
        k, v = ctx.cache.update(layer, *new)
        for row in range(2):
            assert torch.equal(k[row], torch.cat([prompt[0][0], new[0][row]]))
    cache.commit(ctx)
    assert cache.tables["p"][0] == cache.tables["c"][0]  # full block still shared
    assert cache.tables["p"][1] != cache.tables["c"][1]  # partial block was copied
    assert cache.allocator.refcount[cache.tables["p"][0]] == 2
    cache.free("c")
    cache.free("p")
    assert cache.allocator.num_free == 8


def test_paged_attention_equals_decode_attention():
    g = torch.Generator().manual_seed(0)
    pool_k, pool_v = torch.randn(10, 4, 2, 8, generator=g), torch.randn(10, 4, 2, 8, generator=g)
    tables = torch.tensor([[3, 7, 1], [0, 9, 0], [5, 0, 0]])
    lengths = torch.tensor([11, 6, 2])
    q = torch.randn(3, 6, 8, generator=g)
    got = paged_attention(q, pool_k, pool_v, tables, lengths)
    slots = (tables[:, :, None] * 4 + torch.arange(4)).flatten(1)  # (batch, 12) token slots
    k, v = pool_k.flatten(0, 1)[slots], pool_v.flatten(0, 1)[slots]
    want = decode_attention(q, k, v, lengths)
    torch.testing.assert_close(got, want)
    ref = torch.softmax(q[2, 0] @ k[2, :2, 0].T / 8 ** 0.5, -1) @ v[2, :2, 0]
    torch.testing.assert_close(want[2, 0], ref)  # head 0 of row 2 reads KV head 0, 2 keys
    ref5 = torch.softmax(q[0, 5] @ k[0, :11, 1].T / 8 ** 0.5, -1) @ v[0, :11, 1]
    torch.testing.assert_close(want[0, 5], ref5)  # head 5 is in KV head 1's group


def test_generate_paged_equals_contiguous(model, ragged_prompts, pad_left):
    ids, mask = pad_left(ragged_prompts)
    want = generate(model, ids, max_new_tokens=25, attention_mask=mask)[:, ids.shape[1]:].tolist()
    cache = PagedKVCache(model.config.n_layer, num_blocks=64, block_size=4)
    assert generate_paged(model, ragged_prompts, cache, max_new_tokens=25) == want
    assert cache.allocator.num_free == 64  # everything freed


def test_parallel_sampling_by_fork(model, ragged_prompts):
    """Greedy continuations of forks of one prefilled prompt equal the unforked run."""
    prompt = ragged_prompts[2]
    want = generate(model, torch.tensor([prompt]), max_new_tokens=10)[0, len(prompt):].tolist()
    cache = PagedKVCache(model.config.n_layer, num_blocks=32, block_size=4)
    cache.add_sequence(0)

    def step(rows, tokens):
        ctx = cache.prepare(rows, tokens=tokens)
        logits = model(torch.tensor(tokens), ctx)[:, -1]
        cache.commit(ctx)
        return logits

    step([0], [prompt[:-1]])
    for child in (1, 2):
        cache.fork(0, child)
    out = [step([0, 1, 2], [[prompt[-1]]] * 3).argmax(-1)]
    for _ in range(9):
        out.append(step([0, 1, 2], [[t] for t in out[-1].tolist()]).argmax(-1))
    got = torch.stack(out, 1).tolist()
    assert got == [want] * 3


def test_generate_paged_with_mla(make_model, ragged_prompts, pad_left):
    model = make_model("llama", attention="mla")
    ids, mask = pad_left(ragged_prompts)
    want = generate(model, ids, max_new_tokens=15, attention_mask=mask)[:, ids.shape[1]:].tolist()
    cache = PagedKVCache(model.config.n_layer, num_blocks=32, block_size=8)
    assert generate_paged(model, ragged_prompts, cache, max_new_tokens=15) == want


def test_paged_attention_reads_a_live_cache():
    cache = PagedKVCache(n_layer=1, num_blocks=12, block_size=4)
    for s in range(3):
        cache.add_sequence(s)
    ctx = cache.prepare([0, 1, 2], [9, 2, 5])
    k, v = _kv(3, 9, 3)
    k_all, v_all = ctx.cache.update(0, k, v)  # (3, 9, 2, 8), rows padded past their length
    cache.commit(ctx)
    width = max(map(len, cache.tables.values()))
    tables = torch.tensor([t + [0] * (width - len(t)) for t in cache.tables.values()])
    lengths = torch.tensor([cache.lengths[s] for s in range(3)])
    q = torch.randn(3, 4, 8, generator=torch.Generator().manual_seed(4))
    got = paged_attention(q, *cache.pool_view(0), tables, lengths)
    torch.testing.assert_close(got, decode_attention(q, k_all, v_all, lengths))
