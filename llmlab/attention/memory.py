"""Peak memory of the tensors a computation allocates, measured on any device (CPU included).

CUDA has ``torch.cuda.max_memory_allocated``; the CPU has no such counter. This module watches
every tensor operation with a ``TorchDispatchMode``: each new storage an operation returns is
counted as live until the last tensor using it is freed, and the running total's maximum is the
peak. It sees what PyTorch allocates for tensors (outputs, saved activations, gradients), not
scratch buffers inside a kernel. Used by chapter 03 to show that FlashAttention never holds the
``(seq, seq)`` score matrix.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten


class _LiveTensorBytes(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.live = self.peak = 0
        self.refs: dict[int, list[int]] = {}  # storage address -> [tensors alive, bytes]

    def _release(self, key: int) -> None:
        entry = self.refs[key]
        entry[0] -= 1
        if entry[0] == 0:
            self.live -= entry[1]
            del self.refs[key]

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if not isinstance(t, torch.Tensor) or t.device.type == "meta":
                continue
            storage = t.untyped_storage()
            key = storage.data_ptr()
            if key not in self.refs:
                self.refs[key] = [0, storage.nbytes()]
                self.live += storage.nbytes()
                self.peak = max(self.peak, self.live)
            self.refs[key][0] += 1
            weakref.finalize(t, self._release, key)
        return out


def peak_memory(fn: Callable[[], Any]) -> tuple[Any, int]:
    """Run ``fn()`` and return ``(result, peak_bytes)``: the largest total size of tensors
    created inside ``fn`` and alive at the same time (tensors made before it are not counted).
    """
    tracker = _LiveTensorBytes()
    with tracker:
        result = fn()
    return result, tracker.peak
