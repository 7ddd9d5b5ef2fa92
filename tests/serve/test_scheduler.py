"""The scheduler step by step, over a PagedKVCache holding one-number tensors."""

import torch

from llmlab.kvcache import PagedKVCache
from llmlab.serve import Scheduler, SchedulerConfig, Sequence, Status


def make(num_blocks=8, block_size=4, budget=16, max_seqs=4, prefix=False):
    cache = PagedKVCache(1, num_blocks, block_size, prefix_caching=prefix)
    return cache, Scheduler(cache, SchedulerConfig(budget, max_seqs))


def run_step(cache, sched, new_token=7):
    """What the engine does after the forward: reserve, commit, append a sampled token."""
    batch = sched.schedule()
    if batch:
        chunks = [s.tokens[s.num_computed:s.num_computed + n] for s, n in batch.rows]
        ctx = cache.prepare([s.seq_id for s, _ in batch.rows], tokens=chunks)
        ctx.cache.update(0, torch.zeros(len(chunks), max(map(len, chunks)), 1))  # the one layer
        cache.commit(ctx)
    for seq, n in batch.rows:
        seq.num_computed += n
        if seq.num_uncomputed == 0:
            seq.output.append(new_token)
            if len(seq.output) >= seq.max_new_tokens:
                sched.finish(seq)
    return batch


def test_chunked_prefill_mixed_with_decode_under_budget():
    cache, sched = make(num_blocks=32, budget=8)
    a = Sequence("a", list(range(3)), 4)
    b = Sequence("b", list(range(20)), 2)
    sched.add(a)
    sched.add(b)
    batch = run_step(cache, sched)
    assert [(s.seq_id, n) for s, n in batch.rows] == [("a", 3), ("b", 5)]
    batch = run_step(cache, sched)  # a decodes one token, b gets the rest of the budget
    assert [(s.seq_id, n) for s, n in batch.rows] == [("a", 1), ("b", 7)]
    assert all(n <= 8 for _, n in batch.rows) and batch.num_tokens == 8
    batch = run_step(cache, sched)
    assert [(s.seq_id, n) for s, n in batch.rows] == [("a", 1), ("b", 7)]
    assert b.output == []  # 5 + 7 + 7 = 19 of 20 prompt tokens: no token sampled yet
    batch = run_step(cache, sched)
    assert [(s.seq_id, n) for s, n in batch.rows] == [("a", 1), ("b", 1)]
    assert b.output == [7] and a.status is Status.FINISHED


def test_admission_waits_for_free_blocks_fcfs():
    cache, sched = make(num_blocks=4, block_size=4, budget=64)
    big = Sequence("big", list(range(12)), 2)  # 3 blocks
    second = Sequence("second", list(range(8)), 2)  # 2 blocks: does not fit next to big
    small = Sequence("small", [1], 2)  # would fit, but may not overtake "second"
    for s in (big, second, small):
        sched.add(s)
    batch = run_step(cache, sched)
    assert [s.seq_id for s, _ in batch.rows] == ["big"]
    assert [s.seq_id for s in sched.waiting] == ["second", "small"]
    assert cache.num_free_blocks == 1
    run_step(cache, sched)
    assert big.status is Status.FINISHED and cache.num_free_blocks == 4
    batch = run_step(cache, sched)
    assert [s.seq_id for s, _ in batch.rows] == ["second", "small"]


def test_preemption_by_recompute_newest_first():
    cache, sched = make(num_blocks=3, block_size=4, budget=64)
    old = Sequence("old", list(range(4)), 8)
    new = Sequence("new", list(range(4)), 8)
    sched.add(old)
    sched.add(new)
    run_step(cache, sched)  # both prefilled: 2 blocks, 1 free; each now has 5 tokens
    assert cache.num_free_blocks == 1 and old.num_computed == new.num_computed == 4
    batch = run_step(cache, sched)  # both need a 2nd block, only one exists: "new" is preempted
    assert [s.seq_id for s in batch.preempted] == ["new"]
    assert [s.seq_id for s, _ in batch.rows] == ["old"]
    assert new.status is Status.WAITING and new.num_computed == 0 and new.output == [7]
    assert sched.waiting[0] is new and new.num_preemptions == 1
    while old.status is not Status.FINISHED:
        run_step(cache, sched)
    batch = run_step(cache, sched)  # readmitted: prompt and its output are recomputed
    assert batch.rows == [(new, 5)] and new.output == [7, 7]  # 4 prompt + 1 output recomputed


def test_prefix_cache_reuse_skips_computed_blocks():
    cache, sched = make(num_blocks=16, block_size=4, budget=64, prefix=True)
    system = list(range(100, 112))  # 3 full blocks shared by both requests
    first = Sequence("first", system + [1, 2], 1)
    sched.add(first)
    run_step(cache, sched)
    assert first.status is Status.FINISHED  # freed: its full blocks stay cached
    second = Sequence("second", system + [3], 1)
    sched.add(second)
    batch = run_step(cache, sched)
    assert second.num_cached == 12 and batch.rows[0][1] == 1


def test_max_num_seqs_limits_the_batch():
    cache, sched = make(num_blocks=32, budget=64, max_seqs=2)
    for i in range(3):
        sched.add(Sequence(i, [1, 2], 4))
    batch = run_step(cache, sched)
    assert len(batch.rows) == 2 and len(sched.waiting) == 1


def test_simulator_traces_and_detects_a_stuck_scheduler():
    import pytest

    from llmlab.serve import ScheduledBatch, simulate

    trace = simulate([(0, 10, 5), (0, 30, 3), (2, 6, 8), (3, 12, 4)], num_blocks=10, budget=12)
    assert all(sum(n for _, n in t["rows"]) <= 12 for t in trace)
    assert sum(len(t["preempted"]) for t in trace) >= 1
    assert trace[-1]["free_blocks"] == 10 and not trace[-1]["running"]
    with pytest.raises(RuntimeError, match="did not finish"):
        simulate([(0, 4, 2)], schedule_fn=lambda s: ScheduledBatch([], [], []), max_steps=20)
