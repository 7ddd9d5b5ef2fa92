"""Run a scheduler over a real paged cache without a model: step-by-step traces of its decisions.

Each step asks ``schedule_fn(scheduler)`` for a batch, reserves and commits the rows' slots in a
one-layer :class:`~llmlab.kvcache.PagedKVCache` (writing zeros instead of keys and values), and
appends a made-up token to every sequence whose prompt is fully computed, exactly as
:class:`~llmlab.serve.engine.LLMEngine` does after its forward. What it records — rows and their
token counts, admissions, preemptions, the queue and the free blocks — depends only on the
scheduling policy, so two schedulers can be compared trace for trace (chapter 09's scheduler
exercise and its step-by-step widget). Taught in chapter 09 (solutions/09_serve).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from llmlab.kvcache import PagedKVCache
from llmlab.serve.scheduler import ScheduledBatch, Scheduler, SchedulerConfig, Sequence, Status


def simulate(requests: list[tuple[int, int, int]], num_blocks: int = 16, block_size: int = 4,
             budget: int = 16, max_num_seqs: int = 4, prefix_caching: bool = False,
             schedule_fn: Callable[[Scheduler], ScheduledBatch] = Scheduler.schedule,
             shared_prefix: int = 0, max_steps: int = 1000) -> list[dict]:
    """Trace a workload. ``requests``: ``(arrival step, prompt length, output length)`` each.

    Prompts share their first ``shared_prefix`` tokens (a system prompt). Returns one dict per
    step: ``rows`` [(request index, tokens)], ``admitted``, ``preempted``, ``waiting``,
    ``running`` (indices) and ``free_blocks`` after the step.
    """
    cache = PagedKVCache(1, num_blocks, block_size, prefix_caching=prefix_caching)
    sched = Scheduler(cache, SchedulerConfig(budget, max_num_seqs))
    seqs = [Sequence(i, [7] * min(shared_prefix, n) + [100 + 50 * i + j
                                                       for j in range(n - min(shared_prefix, n))],
                     out) for i, (_, n, out) in enumerate(requests)]
    trace: list[dict] = []
    for step in range(max_steps):
        for (arrival, _, _), seq in zip(requests, seqs):
            if arrival == step:
                sched.add(seq)
        if not sched.has_unfinished() and step > max(r[0] for r in requests):
            break
        batch = schedule_fn(sched)
        if batch.rows:
            chunks = [s.tokens[s.num_computed:s.num_computed + n] for s, n in batch.rows]
            ctx = cache.prepare([s.seq_id for s, _ in batch.rows], tokens=chunks)
            ctx.cache.update(0, torch.zeros(len(chunks), max(map(len, chunks)), 1))  # the layer
            cache.commit(ctx)
        for seq, n in batch.rows:
            seq.num_computed += n
            if seq.num_uncomputed == 0:
                seq.output.append(3000 + len(seq.output))
                if len(seq.output) >= seq.max_new_tokens:
                    sched.finish(seq)
        trace.append({
            "rows": [(s.seq_id, n) for s, n in batch.rows],
            "admitted": [s.seq_id for s in batch.admitted],
            "preempted": [s.seq_id for s in batch.preempted],
            "waiting": [s.seq_id for s in sched.waiting],
            "running": [s.seq_id for s in sched.running],
            "free_blocks": cache.num_free_blocks,
        })
    if any(s.status is not Status.FINISHED for s in seqs):
        raise RuntimeError(f"the workload did not finish in {max_steps} steps (a stuck scheduler?)")
    return trace
