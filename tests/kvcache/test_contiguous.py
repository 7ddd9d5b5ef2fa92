"""The contiguous cache: appends in place, grows, commits explicitly, and rejects inputs that do
not fit."""

from __future__ import annotations

import pytest
import torch

from llmlab.kvcache import ContiguousKVCache, PagedKVCache, append_kv, padded_causal_mask


def test_append_kv_writes_in_place_and_returns_a_view():
    buf = torch.zeros(2, 5, 3)
    new = torch.ones(2, 2, 3)
    out = append_kv(buf, 1, new)
    assert out.shape == (2, 3, 3) and out.data_ptr() == buf.data_ptr()
    assert buf[:, 1:3].eq(1).all() and buf[:, 0].eq(0).all() and buf[:, 3:].eq(0).all()
    with pytest.raises(ValueError, match="cannot append"):
        append_kv(buf, 4, new)


def test_update_returns_past_and_new_per_layer():
    cache = ContiguousKVCache(n_layer=2, capacity=2)
    a, b = torch.randn(1, 3, 2, 4), torch.randn(1, 1, 2, 4)
    ctx = cache.prepare(torch.zeros(1, 3, dtype=torch.long))
    assert ctx.cache is cache and ctx.mask is None and ctx.positions.tolist() == [[0, 1, 2]]
    cache.update(0, a, -a)
    cache.update(1, 2 * a, a)
    assert cache.offset == 0  # nothing is part of the cache before the commit
    cache.commit(ctx)
    assert cache.offset == 3
    ctx = cache.prepare(torch.zeros(1, 1, dtype=torch.long))
    assert ctx.positions.tolist() == [[3]]
    k, v = cache.update(0, b, -b)
    assert torch.equal(k, torch.cat([a, b], 1)) and torch.equal(v, -torch.cat([a, b], 1))
    with pytest.raises(ValueError, match=r"layers \[1\] did not store"):
        cache.commit(ctx)  # layer 1 has not stored the new token yet
    assert cache.offset == 3


def test_a_step_is_only_kept_once_committed():
    cache = ContiguousKVCache(n_layer=1)
    a, b = torch.randn(1, 2, 1, 4), torch.randn(1, 2, 1, 4)
    ctx = cache.prepare(torch.zeros(1, 2, dtype=torch.long))
    cache.update(0, a, a)
    cache.commit(ctx)
    with pytest.raises(ValueError, match="latest prepare"):
        cache.commit(ctx)  # a step commits once
    cache.prepare(torch.zeros(1, 2, dtype=torch.long))
    cache.update(0, b, b)  # this step is dropped: the next one replaces it
    ctx = cache.prepare(torch.zeros(1, 2, dtype=torch.long))
    k, _ = cache.update(0, -a, -a)
    cache.commit(ctx)
    assert torch.equal(k, torch.cat([a, -a], 1)) and cache.offset == 4


def test_left_padding_counts_positions_over_real_tokens():
    valid = torch.tensor([[False, True, True], [True, True, True]])
    cache = ContiguousKVCache(n_layer=1, key_valid=valid)
    ctx = cache.prepare(torch.zeros(2, 3, dtype=torch.long))
    assert ctx.positions.tolist() == [[0, 0, 1], [0, 1, 2]]
    assert torch.equal(ctx.mask, padded_causal_mask(valid, 3))
    cache.update(0, torch.zeros(2, 3, 1, 1))
    cache.commit(ctx)
    ctx = cache.prepare(torch.zeros(2, 1, dtype=torch.long))
    assert ctx.positions.tolist() == [[2], [3]] and ctx.mask[0, 0, 0].tolist() == [0, 1, 1, 1]


@pytest.mark.parametrize("make", [lambda: ContiguousKVCache(2), lambda: PagedKVCache(2, 8, 4)])
def test_bad_inputs_raise_clear_errors(make):
    cache = make()
    k = torch.randn(2, 3, 2, 4)
    if isinstance(cache, PagedKVCache):
        cache.add_sequence("a"), cache.add_sequence("b")
        step = cache.prepare(["a", "b"], 3).cache
    else:
        step = cache.prepare(torch.zeros(2, 3, dtype=torch.long)).cache
    with pytest.raises(ValueError, match="layer_idx"):
        step.update(2, k, k)
    with pytest.raises(ValueError, match="same"):
        step.update(0, k, k[:, :2])
    step.update(0, k, k)
    with pytest.raises(ValueError, match="per-token shapes"):
        step.update(0, k[..., :2], k[..., :2])


def test_padded_causal_mask_hides_padding_and_never_empties_a_row():
    valid = torch.tensor([[False, False, True, True], [True, True, True, True]])
    m = padded_causal_mask(valid, 4)[:, 0]
    assert m[0, 2].tolist() == [False, False, True, False]
    assert m[0, 0].all()  # a padding query sees everything (its output is unused)
    assert m[1].equal(torch.ones(4, 4).tril().bool())
