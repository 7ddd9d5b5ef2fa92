"""A fake accelerator for CPU-only CI: tensors that say they live on another device.

``FakeDeviceTensor`` wraps a real CPU tensor but reports ``device == meta``; every op on it
runs on the wrapped CPU data, and an op that mixes it with a plain (non-scalar) CPU tensor
raises ``WrongDevice`` — exactly the "index is on cpu … cuda:0" error a GPU would raise.
``fake_device()`` is the mode under which factories called with ``device=<fake>`` (e.g.
``torch.arange(n, device=x.device)``) build fake-device tensors, as they would on a GPU.
"""

from __future__ import annotations

import contextlib

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_map

FAKE = torch.device("meta")


class WrongDevice(RuntimeError):
    """A tensor created on the CPU met a tensor on the (fake) accelerator."""


class FakeDeviceTensor(torch.Tensor):
    @staticmethod
    def __new__(cls, inner: torch.Tensor):
        return torch.Tensor._make_wrapper_subclass(
            cls, inner.shape, strides=inner.stride(), storage_offset=inner.storage_offset(),
            dtype=inner.dtype, device=FAKE, requires_grad=inner.requires_grad)

    def __init__(self, inner: torch.Tensor) -> None:
        self.inner = inner

    def __repr__(self) -> str:
        return f"FakeDeviceTensor({self.inner!r})"

    @classmethod
    def __torch_dispatch__(cls, func, types, args=(), kwargs=None):
        strays = []

        def unwrap(x):
            if isinstance(x, FakeDeviceTensor):
                return x.inner
            if isinstance(x, torch.Tensor) and x.dim() > 0:
                strays.append(x)
            if isinstance(x, torch.device) and x == FAKE:
                return torch.device("cpu")
            return x

        args, kwargs = tree_map(unwrap, (args, kwargs or {}))
        if strays:
            raise WrongDevice(f"{func}: a {tuple(strays[0].shape)} tensor on "
                              f"{strays[0].device} met tensors on the accelerator")
        out = func(*args, **kwargs)
        return tree_map(lambda x: FakeDeviceTensor(x) if isinstance(x, torch.Tensor) else x, out)


class _Factories(TorchDispatchMode):
    """Factories asked for the fake device build on the CPU and wrap the result."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        if kwargs.get("device") == FAKE and not any(
                isinstance(a, FakeDeviceTensor) for a in args):
            kwargs["device"] = torch.device("cpu")
            return FakeDeviceTensor(func(*args, **kwargs))
        if func is torch.Tensor.tolist and isinstance(args[0], FakeDeviceTensor):
            return args[0].inner.tolist()  # a device->host copy, as on a GPU
        return func(*args, **kwargs)


class _DataFactories(torch.overrides.TorchFunctionMode):
    """``torch.tensor(data, device=<fake>)`` copies host data without an aten factory op."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        if func in (torch.tensor, torch.as_tensor) and kwargs.get("device") is not None \
                and torch.device(kwargs["device"]) == FAKE:
            kwargs["device"] = "cpu"
            return FakeDeviceTensor(func(*args, **kwargs))
        if func is torch.Tensor.tolist and isinstance(args[0], FakeDeviceTensor):
            return args[0].inner.tolist()  # a device->host copy, as on a GPU
        return func(*args, **kwargs)


@contextlib.contextmanager
def fake_device():
    with _DataFactories(), _Factories():
        yield


def to_fake(x):
    """A tensor (or a module, in place) moved to the fake device."""
    if isinstance(x, torch.nn.Module):
        memo: dict[int, torch.Tensor] = {}  # tied weights and shared modules stay shared
        for module in x.modules():
            for table in (module._parameters, module._buffers):
                for name, t in table.items():
                    if t is not None:
                        if id(t) not in memo:
                            new = to_fake(t)
                            memo[id(t)] = (torch.nn.Parameter(new, t.requires_grad)
                                           if isinstance(t, torch.nn.Parameter) else new)
                        table[name] = memo[id(t)]
        return x
    return x if isinstance(x, FakeDeviceTensor) else FakeDeviceTensor(x.detach())


def to_cpu(x: torch.Tensor) -> torch.Tensor:
    return x.inner if isinstance(x, FakeDeviceTensor) else x
