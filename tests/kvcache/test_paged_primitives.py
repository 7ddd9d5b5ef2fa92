"""The two pieces a paged cache is built on: slots through block tables, and copy-on-write."""

import torch

import llmlab.kvcache as kv


def test_token_slots_follow_the_block_table():
    tables = torch.tensor([[5, 2, 7], [0, 1, 3]])
    pos = torch.tensor([[0, 3, 4, 9], [2, 4, 8, 11]])
    want = torch.tensor([[5 * 4 + 0, 5 * 4 + 3, 2 * 4 + 0, 3 * 0 + 7 * 4 + 1],
                         [0 * 4 + 2, 1 * 4 + 0, 3 * 4 + 0, 3 * 4 + 3]])
    assert torch.equal(kv.token_slots(tables, pos, 4), want)


def test_copy_on_write_copies_only_a_shared_partly_filled_tail():
    alloc = kv.BlockAllocator(4)
    pool = torch.arange(16.0).view(16, 1)
    parent = alloc.allocate(2)  # 6 tokens in blocks of 4: the tail block is half full
    alloc.share(parent[0]), alloc.share(parent[1])
    child = list(parent)
    kv.copy_on_write(child, 6, 4, alloc, [pool])
    assert child[0] == parent[0] and child[1] not in parent  # only the tail is copied
    assert torch.equal(pool[child[1] * 4:child[1] * 4 + 4], pool[parent[1] * 4:parent[1] * 4 + 4])
    assert alloc.refcount[parent[1]] == 1 and alloc.refcount[parent[0]] == 2
    full = list(parent)
    kv.copy_on_write(full, 8, 4, alloc, [pool])  # a full tail is never written again: no copy
    assert full == parent and alloc.num_free == 1
