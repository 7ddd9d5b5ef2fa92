"""Fused weight-only quantized matmul for decode: dequantize inside the reduction, never in memory.

At decode a linear layer multiplies a handful of rows (batch 1–8) by its weight, so it is bound by
memory traffic, not arithmetic: fp32 streams 32 bits per weight, a ``QuantLinear`` 8 or 4. The
reference path (``QuantLinear.forward_reference``) throws that saving away by dequantizing the whole
weight to fp32 first. This module instead writes the matmul with the scale and zero point moved out
of the inner sum — for output ``n``, group ``g`` of ``G`` input columns, codes ``q``::

    y[b, n] = sum_g s[n, g] * (sum_{k in g} x[b, k] q[n, k]  -  z[n, g] * sum_{k in g} x[b, k])

and lets ``torch.compile`` (inductor's C++ backend) turn it into one vectorized loop nest that
reads each code byte once, converts it in registers and accumulates — the structure of
llama.cpp's and Marlin's weight-only kernels (Frantar et al., "Marlin", arXiv:2408.11743).
Two kernels: one for a code per byte (5–8 bits), one for two 4-bit codes per byte (2–4 bits,
column ``2j`` in the high nibble); the nibble kernel takes the even and odd input columns as two
contiguous vectors so both its loads stay unit-stride.

For bf16 inputs, 4-bit layers instead call torch's packed int4 CPU kernel
(``aten._weight_int4pack_mm_for_cpu``), which measured faster than anything compiled here (see
bench/results/quant.md); it computes in bf16, so it serves only inputs that already are bf16.
For fp32 inputs the compiled kernels measured faster than torch's packed int8/int4 kernels.

Each kernel compiles once per shape bucket: a layer shape at batch 1, and the same shape at batch
2–8 (the batch size marked dynamic, every other size static — with every size dynamic, inductor's
AVX2 code for the byte kernel came out wrong on torch 2.13, which the tests catch). Where no
working C++ compiler is available the first call fails: the layer warns once and uses the
reference path from then on. Taught in chapter 07 (solutions/07_quant).
"""

from __future__ import annotations

import functools
import types
import warnings
from collections.abc import Callable

import torch

MAX_ROWS = 8  # decode batch sizes; above this the matmul is compute-bound: dequantize + GEMM wins


def byte_kernel(x: torch.Tensor, codes: torch.Tensor, scales: torch.Tensor,
                zeros: torch.Tensor) -> torch.Tensor:
    """x (B, K) float32, codes (N, K) uint8, scales (N, G) fp16, zeros (N, G) uint8 -> (B, N).

    Rows of the batch are the fastest output index, so a weight row is read once for all B."""
    b, (n, g) = x.shape[0], scales.shape
    xg = x.view(1, b, g, -1)
    part = (codes.view(n, 1, g, -1).float() * xg).sum(-1)  # (N, B, G): sum_k q x per group
    z, s = zeros.float().view(n, 1, g), scales.float().view(n, 1, g)
    return ((part - z * xg.sum(-1)) * s).sum(-1).t()


def nibble_kernel(x_even: torch.Tensor, x_odd: torch.Tensor, packed: torch.Tensor,
                  scales: torch.Tensor, zeros: torch.Tensor) -> torch.Tensor:
    """x_even, x_odd (B, K/2) float32 (input columns 0, 2, ... and 1, 3, ...), packed (N, K/2)
    uint8 with column 2j's code in the high nibble, scales (N, G) fp16, zeros (N, G) uint8 ->
    (B, N). Needs an even group size, so that a group's columns pair up inside one byte row."""
    b, (n, g) = x_even.shape[0], scales.shape
    p = packed.view(n, 1, g, -1).to(torch.int32)
    xe, xo = x_even.view(1, b, g, -1), x_odd.view(1, b, g, -1)
    part = ((p >> 4).float() * xe + (p & 15).float() * xo).sum(-1)  # (N, B, G)
    z, s = zeros.float().view(n, 1, g), scales.float().view(n, 1, g)
    return ((part - z * (xe.sum(-1) + xo.sum(-1))) * s).sum(-1).t()


@functools.cache
def compiled(kernel: Callable, shape: tuple[int, ...]) -> Callable:
    """``kernel`` compiled for one layer ``shape`` (inductor's C++ backend on CPU): static sizes
    except a batch dimension marked dynamic. Each shape gets its own copy of the kernel's code,
    because dynamo keeps its compiled entries per code object (8 by default) and checks them in
    turn on every call: one copy per shape keeps that list at two buckets."""
    copy = types.FunctionType(kernel.__code__.replace(), kernel.__globals__, kernel.__name__)
    return torch.compile(copy, dynamic=False)


def batch_bucket(*rows: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Mark the batch dimension of (B, K) inputs dynamic when B > 1: batch 2–8 share one bucket."""
    if rows[0].shape[0] > 1:
        for r in rows:
            torch._dynamo.mark_dynamic(r, 0)
    return rows


def supports(layer: torch.nn.Module, x: torch.Tensor) -> bool:
    """Whether the fused path applies: a weight-only layer on CPU, an fp32 input with at most
    :data:`MAX_ROWS` rows that needs no gradient, and (4-bit codes) an even group size."""
    rows = x.numel() // max(x.shape[-1], 1)
    return (layer.act_bits is None and x.device.type == "cpu" and x.dtype == torch.float32
            and 1 <= rows <= MAX_ROWS and not (torch.is_grad_enabled() and x.requires_grad)
            and (layer.bits > 4 or layer.group_size % 2 == 0))


def fused_linear(layer: torch.nn.Module, x: torch.Tensor,
                 compile_fn: Callable[[Callable, tuple], Callable] | None = None) -> torch.Tensor:
    """``layer``'s output for ``x`` (..., in) through the compiled kernel; raises what the compiler
    raises (the caller falls back). ``compile_fn(kernel, shape)`` gives the function that runs
    ``kernel`` (default :func:`compiled`; ``lambda k, shape: k`` runs it eagerly)."""
    compile_fn = compile_fn or compiled
    shape = (layer.out_features, layer.in_features, layer.scales.shape[1])
    rows = x.reshape(-1, layer.in_features)
    if layer.bits <= 4:
        pairs = rows.view(rows.shape[0], -1, 2)
        x_even, x_odd = batch_bucket(pairs[..., 0].contiguous(), pairs[..., 1].contiguous())
        y = compile_fn(nibble_kernel, shape)(x_even, x_odd, layer.qweight, layer.scales,
                                             layer.zeros)
    else:
        (rows,) = batch_bucket(rows.contiguous().view(rows.shape))
        y = compile_fn(byte_kernel, shape)(rows, layer.qweight, layer.scales, layer.zeros)
    if layer.bias is not None:
        y = y + layer.bias
    return y.reshape(*x.shape[:-1], layer.out_features)


PACKED_INT4_GROUPS = (32, 64, 128, 256)  # the group sizes torch's packed int4 kernel takes


def supports_packed_int4(layer: torch.nn.Module, x: torch.Tensor) -> bool:
    """Whether torch's packed int4 kernel applies: a weight-only 4-bit layer on CPU with
    out_features a multiple of 16 and a group size it takes, a bf16 input needing no gradient."""
    return (layer.act_bits is None and layer.bits == 4 and x.device.type == "cpu"
            and x.dtype == torch.bfloat16 and layer.out_features % 16 == 0
            and layer.group_size in PACKED_INT4_GROUPS
            and not (torch.is_grad_enabled() and x.requires_grad))


def packed_int4_weight(layer: torch.nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """``layer``'s codes in torch's packed int4 layout and its (G, N, 2) bf16 scales and zeros.
    torch dequantizes (q - 8) * scale + zero, so zero = (8 - z) * s gives QuantLinear's
    (q - z) * s. Cached on the layer until its codes, scales or zeros change."""
    version = (layer.qweight._version, layer.scales._version, layer.zeros._version)
    cached = getattr(layer, "_packed_int4", None)
    if cached is None or cached[0] != version:
        packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(
            layer.codes().to(torch.int32), 1)
        s = layer.scales.float()
        sz = torch.stack([s.t(), ((8 - layer.zeros.float()) * s).t()], -1)
        cached = (version, packed, sz.contiguous().to(torch.bfloat16))
        layer._packed_int4 = cached
    return cached[1], cached[2]


def packed_int4_linear(layer: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``layer``'s output for a bf16 ``x`` (..., in) through torch's packed int4 kernel."""
    packed, sz = packed_int4_weight(layer)
    y = torch.ops.aten._weight_int4pack_mm_for_cpu(x.reshape(-1, layer.in_features), packed,
                                                   layer.group_size, sz)
    if layer.bias is not None:
        y = y + layer.bias.to(y.dtype)
    return y.reshape(*x.shape[:-1], layer.out_features)


def warn_fallback(error: BaseException) -> None:
    """The one-line warning when the compiled kernel cannot run on this machine."""
    first = (str(error).strip().splitlines() or [""])[0][:160]
    warnings.warn(f"QuantLinear: the fused kernel could not be compiled ({type(error).__name__}: "
                  f"{first}); using the dequantize-then-matmul reference path", RuntimeWarning,
                  stacklevel=3)
