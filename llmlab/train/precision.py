"""Which precision to train in on this machine: ``"auto"``, ``"bf16"`` or ``"fp32"``.

bf16 autocast (Micikevicius et al., "Mixed Precision Training", arXiv:1710.03740; bf16 needs no
loss scaling) pays only where the hardware multiplies bf16 natively: NVIDIA GPUs from Ampere on,
and CPUs with AMX or AVX-512-BF16 (recent Xeons, AMD Zen 4). Elsewhere — most laptops (AVX2 only),
Apple silicon as PyTorch sees it — PyTorch converts bf16 to fp32 inside every matmul and runs one
to two orders of magnitude *slower* than plain fp32. So ``"auto"`` measures instead of assuming:
on a CPU it times a small matmul in both dtypes once per process and picks bf16 only when it is
clearly faster. The same test decides correctly when oneDNN and ATen are restricted to AVX2
kernels (``ONEDNN_MAX_CPU_ISA=AVX2``, ``ATEN_CPU_CAPABILITY=avx2``), which is how the test suite
stands in for a laptop on a server CPU.

Taught in chapter 02 (solutions/02_gpt).
"""

from __future__ import annotations

import contextlib
import functools
import warnings

import torch

from llmlab.train.mfu import measure_matmul_peak

PRECISIONS = ("auto", "bf16", "fp32")
DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}
FAST_ENOUGH = 1.5  # bf16 must beat fp32 by this factor on a CPU to be chosen


@functools.cache
def bf16_speedup(device_type: str = "cpu") -> float:
    """Measured bf16 ÷ fp32 matmul throughput on this device type (cached per process).

    On a CPU it times one thread, fp32 first: a ratio is what matters, and a multi-threaded
    microsecond timing on a shared machine measures the scheduler rather than the arithmetic.
    """
    threads = torch.get_num_threads()
    if device_type == "cpu":
        torch.set_num_threads(1)
    try:
        fp32 = measure_matmul_peak(torch.float32, n=256, repeats=3, device=device_type)
        bf16 = measure_matmul_peak(torch.bfloat16, n=256, repeats=3, device=device_type)
    finally:
        torch.set_num_threads(threads)
    return bf16 / fp32


def bf16_is_fast(device_type: str = "cpu") -> bool:
    """True where bf16 autocast makes training faster: a CUDA GPU with bf16 support, or a CPU whose
    bf16 matmuls measure at least ``FAST_ENOUGH`` × its fp32 ones."""
    if device_type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device_type != "cpu":
        return False
    if not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        return False
    return bf16_speedup("cpu") >= FAST_ENOUGH


@functools.cache
def _warn_slow_bf16(device_type: str) -> None:
    warnings.warn(
        f"precision='bf16' on a {device_type} without fast native bf16: bf16 matmuls run at "
        f"{bf16_speedup(device_type):.2g}× the speed of fp32 here. Use precision='auto' (or 'fp32').",
        RuntimeWarning, stacklevel=3)


def resolve_precision(precision: str, device: str | torch.device = "cpu") -> str:
    """``"auto"`` → ``"bf16"`` where :func:`bf16_is_fast`, else ``"fp32"``; an explicit choice is
    kept (``"bf16"`` where it is slow warns once, with the measured slowdown)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r}; expected one of {PRECISIONS}")
    device_type = torch.device(device).type
    if precision == "auto":
        return "bf16" if bf16_is_fast(device_type) else "fp32"
    if precision == "bf16" and not bf16_is_fast(device_type):
        _warn_slow_bf16(device_type)
    return precision


def autocast(precision: str, device: str | torch.device = "cpu"):
    """Autocast to bf16 on ``device``'s type for ``"bf16"``, nothing for ``"fp32"``
    (``"auto"`` is resolved first)."""
    if resolve_precision(precision, device) == "bf16":
        return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)
    return contextlib.nullcontext()
