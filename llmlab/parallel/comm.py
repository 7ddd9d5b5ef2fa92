"""Point-to-point communicators: the one interface every llmlab ring algorithm is written against.

A communicator has ``rank``, ``world_size``, ``sendrecv(send, dst, recv, src)`` (send one tensor
and receive one into a buffer, at the same time so a ring never deadlocks) and counts
``bytes_sent``. Two implementations:

- :class:`DistComm` — real processes through ``torch.distributed`` (``isend``/``irecv``);
- :class:`ThreadComm` — simulated ranks: ``run_threads(fn, k)`` runs ``fn(..., comm=comm)`` in k threads of
  one process, passing tensors through queues. The same ring code runs on both, so a function
  written in a notebook cell can be tested on simulated ranks and llmlab's copy on real ones.
  Where threads are not available (the grader's judge), :func:`run_replay` runs the same ranks
  one after another, replaying each from the start once the messages it waits for exist.

Taught in chapter 04 (solutions/04_parallel).
"""

from __future__ import annotations

import copy
import queue
import threading
import traceback
from collections.abc import Callable
from typing import Any, Protocol

import torch
import torch.distributed as dist


class Comm(Protocol):
    """What a ring algorithm needs from the ranks it runs on."""

    rank: int
    world_size: int
    bytes_sent: int

    def sendrecv(self, send: torch.Tensor, dst: int, recv: torch.Tensor, src: int) -> None:
        """Send ``send`` to rank ``dst`` and fill ``recv`` (in place) from rank ``src``."""


class DistComm:
    """``Comm`` over the default ``torch.distributed`` process group (or ``group``)."""

    def __init__(self, group: dist.ProcessGroup | None = None) -> None:
        self.group = group
        self.rank = dist.get_rank(group)
        self.world_size = dist.get_world_size(group)
        self.bytes_sent = 0

    def _global(self, r: int) -> int:
        return r if self.group is None else dist.get_global_rank(self.group, r)

    def sendrecv(self, send: torch.Tensor, dst: int, recv: torch.Tensor, src: int) -> None:
        ops = [dist.P2POp(dist.isend, send.contiguous(), self._global(dst), self.group),
               dist.P2POp(dist.irecv, recv, self._global(src), self.group)]
        for req in dist.batch_isend_irecv(ops):
            req.wait()
        self.bytes_sent += send.numel() * send.element_size()


class ThreadComm:
    """``Comm`` for simulated ranks: one thread per rank, tensors passed through queues."""

    def __init__(self, rank: int, boxes: list[list[queue.Queue]], timeout: float) -> None:
        self.rank, self.world_size = rank, len(boxes)
        self._boxes, self._timeout = boxes, timeout  # boxes[src][dst]: messages src -> dst
        self.bytes_sent = 0

    def sendrecv(self, send: torch.Tensor, dst: int, recv: torch.Tensor, src: int) -> None:
        self._boxes[self.rank][dst].put(send.detach().clone())
        self.bytes_sent += send.numel() * send.element_size()
        try:
            got = self._boxes[src][self.rank].get(timeout=self._timeout)
        except queue.Empty:
            raise TimeoutError(f"rank {self.rank} waited {self._timeout}s for rank {src}") from None
        recv.copy_(got)


def rank_args(args: tuple[Any, ...], rank: int, world_size: int) -> list[Any]:
    """Rank ``rank``'s arguments: a list of length ``world_size`` is split, anything else shared."""
    return [a[rank] if isinstance(a, list) and len(a) == world_size else a for a in args]


def run_threads(fn: Callable[..., Any], world_size: int, *args: Any,
                timeout: float = 10.0) -> tuple[list[Any], list[int]]:
    """Run ``fn(*args, comm=comm)`` on ``world_size`` simulated ranks (threads of this process).

    ``args`` whose value is a list of length ``world_size`` are split: rank r gets ``arg[r]``.
    Returns ``(results by rank, bytes sent by rank)``. A rank that raises re-raises here.
    """
    boxes = [[queue.Queue() for _ in range(world_size)] for _ in range(world_size)]
    comms = [ThreadComm(r, boxes, timeout) for r in range(world_size)]
    out: list[Any] = [None] * world_size
    errors: list[str | None] = [None] * world_size

    def body(r: int) -> None:
        mine = rank_args(args, r, world_size)
        try:
            out[r] = fn(*mine, comm=comms[r])
        except BaseException:  # noqa: BLE001 - reported below
            errors[r] = traceback.format_exc()

    threads = [threading.Thread(target=body, args=(r,), daemon=True) for r in range(world_size)]
    try:
        threads[0].start()
    except RuntimeError:  # no threads here: the same ranks, replayed one at a time
        return run_replay(fn, world_size, *args)
    for t in threads[1:]:
        t.start()
    for t in threads:
        t.join(timeout + 5.0)
    failed = [(r, e) for r, e in enumerate(errors) if e is not None]
    failed.sort(key=lambda f: "TimeoutError: rank" in f[1])  # the cause first, then its victims
    if failed:
        raise RuntimeError("\n".join(f"simulated rank {r} of {world_size} failed:\n{e}"
                                     for r, e in failed))
    if any(t.is_alive() for t in threads):
        raise RuntimeError("simulated ranks did not finish (a rank waits for a message that was "
                           "never sent?)")
    return out, [c.bytes_sent for c in comms]


class _Waiting(BaseException):
    """A replayed rank needs a message no rank has sent yet (not an error the rank may catch)."""


class ReplayComm:
    """``Comm`` for :func:`run_replay`: messages live in a shared mailbox, keyed by
    ``(src, dst, k)`` for the k-th message from src to dst, so a rank run again from the start
    sends the same messages (kept once) and receives them in the same order."""

    def __init__(self, rank: int, world_size: int, mailbox: dict[tuple[int, int, int], torch.Tensor]) -> None:
        self.rank, self.world_size, self._mailbox = rank, world_size, mailbox
        self._sent = [0] * world_size
        self._received = [0] * world_size
        self.bytes_sent = 0

    def sendrecv(self, send: torch.Tensor, dst: int, recv: torch.Tensor, src: int) -> None:
        self._mailbox.setdefault((self.rank, dst, self._sent[dst]), send.detach().clone())
        self._sent[dst] += 1
        self.bytes_sent += send.numel() * send.element_size()
        key = (src, self.rank, self._received[src])
        if key not in self._mailbox:
            raise _Waiting
        recv.copy_(self._mailbox[key])
        self._received[src] += 1


def run_replay(fn: Callable[..., Any], world_size: int, *args: Any) -> tuple[list[Any], list[int]]:
    """:func:`run_threads` without threads: each unfinished rank runs from the start (on fresh
    copies of its arguments) until it waits for a message nobody has sent; repeated until every
    rank returns. Deterministic ranks give exactly the threads' results and byte counts."""
    mailbox: dict[tuple[int, int, int], torch.Tensor] = {}
    out: list[Any] = [None] * world_size
    sent = [0] * world_size
    todo = list(range(world_size))
    while todo:
        before, waiting = len(mailbox), []
        for r in todo:
            comm = ReplayComm(r, world_size, mailbox)
            mine = copy.deepcopy(rank_args(args, r, world_size))
            try:
                out[r] = fn(*mine, comm=comm)
            except _Waiting:
                waiting.append(r)
                continue
            except Exception as exc:
                raise RuntimeError(f"simulated rank {r} of {world_size} failed:\n"
                                   f"{''.join(traceback.format_exception(exc))}") from None
            sent[r] = comm.bytes_sent
        if waiting and len(waiting) == len(todo) and len(mailbox) == before:
            raise RuntimeError("simulated ranks did not finish (a rank waits for a message that was "
                               "never sent?)")
        todo = waiting
    return out, sent
