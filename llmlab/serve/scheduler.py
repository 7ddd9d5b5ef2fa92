"""Continuous batching: which sequences run in the next forward, and how many tokens each.

Orca ("Orca: A Distributed Serving System for Transformer-Based Generative Models", OSDI 2022)
schedules at the granularity of one iteration: a finished request leaves the batch and a waiting
one joins at the very next step, instead of the whole batch waiting for its longest member
(static batching). vLLM ("Efficient Memory Management for Large Language Model Serving with
PagedAttention", arXiv 2309.06180) admits a request only when the paged KV cache has blocks for
it and, when running sequences outgrow the pool, *preempts* the most recently arrived one: its
blocks are freed and it is recomputed later from its prompt and the tokens it already produced.
Sarathi-Serve ("Taming Throughput-Latency Tradeoff in LLM Inference with Sarathi-Serve",
arXiv 2403.02310) splits long prompts into chunks so that one forward mixes decode tokens and a
prefill chunk under a fixed *token budget*, keeping decode latency flat while prompts arrive.

This file is pure Python: it talks to the KV cache only through :class:`KVSpace` (implemented by
:class:`llmlab.kvcache.PagedKVCache`, no tensor is touched before the engine's forward), so every
decision can be tested step by step. One step:

1. running sequences, oldest first, each get their next tokens (1 when decoding, a chunk while
   prefilling) within the budget; when the pool cannot hold them, the newest running sequence is
   preempted (recompute) until it can;
2. if nothing was preempted, waiting sequences are admitted first-come-first-served (no
   overtaking, so a long prompt cannot starve) while the budget, ``max_num_seqs`` and the free
   blocks allow; prefix-cached tokens of their prompt are not recomputed.

Taught in chapter 09 (solutions/09_serve).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable
from dataclasses import dataclass, field
from enum import Enum
from typing import Protocol

from llmlab.utils import reject_unknown_keys


class KVSpace(Protocol):
    """What the scheduler needs from a paged cache."""

    num_free_blocks: int

    def add_sequence(self, seq_id: Hashable, prompt: list[int] | None = None,
                     salt: bytes | None = None) -> int: ...
    def blocks_needed(self, seq_id: Hashable, n: int) -> int: ...
    def free(self, seq_id: Hashable) -> None: ...


class Status(Enum):
    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"


@dataclass
class Sequence:
    """One request's tokens. ``num_computed`` of them have keys and values in the cache."""

    seq_id: Hashable
    prompt: list[int]
    max_new_tokens: int
    output: list[int] = field(default_factory=list)
    num_computed: int = 0
    status: Status = Status.WAITING
    num_preemptions: int = 0
    num_cached: int = 0  # prompt tokens found in the prefix cache at the last admission
    salt: bytes | None = None  # keys its KV blocks apart in the prefix cache (e.g. its adapter)

    @property
    def tokens(self) -> list[int]:
        return self.prompt + self.output

    @property
    def num_uncomputed(self) -> int:
        return len(self.prompt) + len(self.output) - self.num_computed


@reject_unknown_keys
@dataclass
class SchedulerConfig:
    """``max_num_batched_tokens``: the token budget of one forward; ``max_num_seqs``: rows."""

    max_num_batched_tokens: int = 256
    max_num_seqs: int = 16
    chunked_prefill: bool = True

    def __post_init__(self) -> None:
        if self.max_num_batched_tokens < 1 or self.max_num_seqs < 1:
            raise ValueError(f"budget and max_num_seqs must be >= 1, got "
                             f"{self.max_num_batched_tokens}, {self.max_num_seqs}")


@dataclass
class ScheduledBatch:
    """One step's plan: ``(sequence, number of its next tokens to compute)`` per row."""

    rows: list[tuple[Sequence, int]]
    preempted: list[Sequence]
    admitted: list[Sequence]

    @property
    def num_tokens(self) -> int:
        return sum(n for _, n in self.rows)

    def __bool__(self) -> bool:
        return bool(self.rows)


class Scheduler:
    """FCFS continuous batching over a :class:`KVSpace` with chunked prefill and preemption."""

    def __init__(self, kv: KVSpace, config: SchedulerConfig | None = None) -> None:
        self.kv, self.config = kv, config or SchedulerConfig()
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []  # in arrival order: the oldest first

    def add(self, seq: Sequence) -> None:
        seq.status = Status.WAITING
        self.waiting.append(seq)

    def has_unfinished(self) -> bool:
        return bool(self.waiting or self.running)

    def finish(self, seq: Sequence) -> None:
        """Remove a finished or aborted sequence and free its blocks."""
        if seq in self.running:
            self.running.remove(seq)
            self.kv.free(seq.seq_id)
        elif seq in self.waiting:
            self.waiting.remove(seq)
        seq.status = Status.FINISHED

    def _chunk(self, seq: Sequence, budget: int) -> int:
        n = seq.num_uncomputed
        return min(n, budget) if self.config.chunked_prefill else (n if n <= budget else 0)

    def _preempt(self, seq: Sequence) -> None:
        """Recompute preemption: drop its KV blocks; it re-enters the queue at the front."""
        self.running.remove(seq)
        self.kv.free(seq.seq_id)
        seq.num_computed, seq.status = 0, Status.WAITING
        seq.num_preemptions += 1
        self.waiting.appendleft(seq)

    def schedule(self) -> ScheduledBatch:
        budget, reserved = self.config.max_num_batched_tokens, 0
        rows: list[tuple[Sequence, int]] = []
        preempted: list[Sequence] = []
        queue = list(self.running)
        while queue and budget > 0:
            seq = queue.pop(0)
            n = self._chunk(seq, budget)
            if n == 0:
                continue
            need = self.kv.blocks_needed(seq.seq_id, n)
            while reserved + need > self.kv.num_free_blocks and seq in self.running:
                victim = queue.pop() if queue else seq  # the newest running sequence
                self._preempt(victim)
                preempted.append(victim)
            if seq not in self.running:
                break
            rows.append((seq, n))
            reserved += need
            budget -= n
        admitted: list[Sequence] = []
        while (not preempted and self.waiting and budget > 0
               and len(self.running) < self.config.max_num_seqs):
            seq = self.waiting[0]
            cached = self.kv.add_sequence(seq.seq_id, seq.tokens, seq.salt)
            seq.num_computed = seq.num_cached = cached
            n = self._chunk(seq, budget)
            need = self.kv.blocks_needed(seq.seq_id, n) if n else 0
            if n == 0 or reserved + need > self.kv.num_free_blocks:
                self.kv.free(seq.seq_id)  # undo: it waits for the next step (no overtaking)
                seq.num_computed = 0
                break
            self.waiting.popleft()
            seq.status = Status.RUNNING
            self.running.append(seq)
            admitted.append(seq)
            rows.append((seq, n))
            reserved += need
            budget -= n
        return ScheduledBatch(rows, preempted, admitted)
