"""Data parallelism with gradient buckets all-reduced while backward is still running.

Every rank holds the whole model and runs its own slice of the batch; gradients are averaged
across ranks before the optimizer step, so every rank takes the same step as one process on the
whole batch. PyTorch's DDP (Li et al., "PyTorch Distributed: Experiences on Accelerating Data
Parallel Training", arXiv:2006.15704) makes this cheap two ways, both here:

- **buckets**: gradients are packed into ~``bucket_bytes`` flat buffers (one collective per
  bucket instead of one per tensor: fewer α terms), filled in reverse parameter order, roughly
  the order backward produces them;
- **overlap**: a hook fires when a parameter's gradient is final
  (``register_post_accumulate_grad_hook``); when the last gradient of a bucket arrives the bucket's
  all-reduce starts asynchronously while backward computes earlier layers.

Taught in chapter 04 (solutions/04_parallel).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from llmlab.parallel.groups import DistGroup, RingGroup


def make_buckets(params: list[nn.Parameter], bucket_bytes: int) -> list[list[nn.Parameter]]:
    """Group ``params`` (in the given order) into buckets of at least ``bucket_bytes`` each
    (the last may be smaller). A parameter is never split across buckets."""
    if bucket_bytes <= 0:
        raise ValueError(f"bucket_bytes must be positive, got {bucket_bytes}")
    buckets: list[list[nn.Parameter]] = [[]]
    size = 0
    for p in params:
        if size >= bucket_bytes:
            buckets.append([])
            size = 0
        buckets[-1].append(p)
        size += p.numel() * p.element_size()
    return [b for b in buckets if b]


class DDP(nn.Module):
    """Wrap ``module`` for data parallelism over ``group``: a ``torch.distributed`` process group
    (default: every rank) or a :class:`~llmlab.parallel.groups.RingGroup` of simulated ranks.

    Use: ``loss = f(ddp(x)); loss.backward(); ddp.finish_gradient_sync(); opt.step()``.
    After ``finish_gradient_sync`` every ``p.grad`` is the mean over ranks. Backward passes run
    inside ``with ddp.no_sync():`` only accumulate gradients (gradient accumulation: the next
    backward outside it all-reduces the sums, as PyTorch's ``DDP.no_sync``). ``overlap=False``
    reduces every bucket after backward (the baseline the overlap is measured against).
    ``bytes_reduced`` counts the gradient bytes all-reduced so far.
    """

    def __init__(self, module: nn.Module, bucket_bytes: int = 1 << 20, overlap: bool = True,
                 group: dist.ProcessGroup | DistGroup | RingGroup | None = None) -> None:
        super().__init__()
        self.module, self.overlap = module, overlap
        self.group = group if isinstance(group, (DistGroup, RingGroup)) else DistGroup(group)
        self.world_size = self.group.world_size
        for t in [*module.parameters(), *module.buffers()]:  # every rank starts from rank 0's
            self.group.broadcast(t.data, src=0)
        params = [p for p in module.parameters() if p.requires_grad]
        self.buckets = make_buckets(params[::-1], bucket_bytes)  # backward order, roughly
        self._bucket_of = {id(p): i for i, b in enumerate(self.buckets) for p in b}
        self._pending: list[int] = []
        self._inflight: dict[int, tuple[torch.Tensor, Any]] = {}
        self.bytes_reduced = 0
        self.syncing = True
        self._reset()
        for p in params:
            p.register_post_accumulate_grad_hook(self._grad_ready)

    def forward(self, *args, **kwargs):
        return self.module(*args, **kwargs)

    @contextlib.contextmanager
    def no_sync(self) -> Iterator[None]:
        """Backward passes inside only accumulate ``p.grad``; nothing is communicated."""
        self.syncing = False
        try:
            yield
        finally:
            self.syncing = True

    def _reset(self) -> None:
        self._pending = [len(b) for b in self.buckets]
        self._inflight = {}

    def _grad_ready(self, p: nn.Parameter) -> None:
        if not self.syncing:
            return
        i = self._bucket_of[id(p)]
        self._pending[i] -= 1
        if self.overlap and self._pending[i] == 0:
            self._start(i)

    def _start(self, i: int) -> None:
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in self.buckets[i]]
        flat = torch.cat([g.reshape(-1) for g in grads])
        self.bytes_reduced += flat.numel() * flat.element_size()
        self._inflight[i] = (flat, self.group.all_reduce(flat))

    def finish_gradient_sync(self) -> None:
        """Start the buckets not started yet, wait for all, write the mean gradients back."""
        for i in range(len(self.buckets)):
            if i not in self._inflight:
                self._start(i)
        for i, (flat, work) in self._inflight.items():
            work.wait()
            flat /= self.world_size
            offset = 0
            for p in self.buckets[i]:
                n = p.numel()
                p.grad = flat[offset:offset + n].view_as(p).clone()
                offset += n
        self._reset()
