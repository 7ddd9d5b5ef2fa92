"""Process groups as data parallelism sees them: ``broadcast`` and an asynchronous ``all_reduce``.

DDP (``llmlab.parallel.ddp``) needs four things from the ranks it runs on: ``rank``,
``world_size``, ``broadcast(t, src)`` (in place) and ``all_reduce(t)``, which *starts* summing
``t`` in place over the ranks and returns a handle whose ``wait()`` returns once ``t`` holds the
sum (``torch.distributed.all_reduce(t, async_op=True)``'s contract). Two implementations:

- :class:`DistGroup` — real processes, through ``torch.distributed`` (gloo on a CPU, NCCL on GPUs);
- :class:`RingGroup` — any :class:`~llmlab.parallel.comm.Comm` (simulated ranks in threads, or
  replayed where threads are not available), with llmlab's ring all-reduce and chain broadcast.
  Its all-reduce is deferred: the ring runs when the handle is waited on, so an all-reduce that
  is never waited on never happens. It records every call (:attr:`RingGroup.log`) with the
  ``phase`` its caller set, so a test can tell an all-reduce started during backward from one
  started after it.

Taught in chapter 04 (solutions/04_parallel).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.distributed as dist

from llmlab.parallel.collectives import chain_broadcast, ring_all_reduce
from llmlab.parallel.comm import Comm


class Done:
    """The handle of a collective that finishes when ``wait()`` runs ``finish`` (once)."""

    def __init__(self, finish: Callable[[], None]) -> None:
        self._finish: Callable[[], None] | None = finish

    def wait(self) -> bool:
        if self._finish is not None:
            finish, self._finish = self._finish, None
            finish()
        return True

    def is_completed(self) -> bool:
        return self._finish is None


class DistGroup:
    """``torch.distributed``'s default group (or ``group``) with DDP's four operations."""

    def __init__(self, group: dist.ProcessGroup | None = None) -> None:
        self.group = group
        self.rank = dist.get_rank(group)
        self.world_size = dist.get_world_size(group)

    def broadcast(self, t: torch.Tensor, src: int) -> None:
        """``src``'s ``t`` (``src`` a rank of this group) on every rank, in place."""
        root = dist.get_global_rank(self.group, src) if self.group is not None else src
        dist.broadcast(t, src=root, group=self.group)

    def all_reduce(self, t: torch.Tensor) -> dist.Work:
        """Start summing ``t`` in place over the group; ``.wait()`` on the result finishes it."""
        return dist.all_reduce(t, group=self.group, async_op=True)


class RingGroup:
    """DDP's four operations over a point-to-point ``comm``, by llmlab's rings.

    ``log`` lists ``(op, numel, phase)`` for every call, ``phase`` being whatever the caller set
    on :attr:`phase` when the call was made (e.g. ``"backward"``)."""

    def __init__(self, comm: Comm) -> None:
        self.comm = comm
        self.rank, self.world_size = comm.rank, comm.world_size
        self.phase = ""
        self.log: list[tuple[str, int, str]] = []

    def broadcast(self, t: torch.Tensor, src: int) -> None:
        if not 0 <= src < self.world_size:
            raise ValueError(f"src must be a rank in [0, {self.world_size}), got {src}")
        self.log.append(("broadcast", t.numel(), self.phase))
        with torch.no_grad():
            t.copy_(chain_broadcast(t.detach(), src, self.comm, n_chunks=1))

    def all_reduce(self, t: torch.Tensor) -> Done:
        self.log.append(("all_reduce", t.numel(), self.phase))

        def finish() -> None:
            with torch.no_grad():
                t.copy_(ring_all_reduce(t.detach(), self.comm))

        return Done(finish)


__all__ = ["DistGroup", "Done", "RingGroup"]
