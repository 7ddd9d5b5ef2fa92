"""Number formats: integer (absmax and zero-point) at any granularity, minifloats (FP8, FP4) and
MX block scaling.

Integer quantization maps a float ``x`` to a code ``q`` with a scale ``Δ`` (and zero point ``z``):

- symmetric (absmax): ``Δ = max|x| / (2^(b-1) - 1)``, ``q = clamp(round(x / Δ), -2^(b-1), 2^(b-1) - 1)``,
  ``x̂ = q Δ``;
- asymmetric with an integer zero point (:func:`quantize`, ``symmetric=False``):
  ``Δ = (max x - min x) / (2^b - 1)``, ``z = round(-min x / Δ)``,
  ``q = clamp(round(x / Δ) + z, 0, 2^b - 1)``, ``x̂ = (q - z) Δ`` (the range is widened to contain
  0, as GPTQ, AWQ and ONNX's QuantizeLinear do, so that 0 is exact and integer kernels can
  subtract ``z``);
- asymmetric with a float offset (:func:`minmax_quantize`): ``Δ = (max x - min x) / (2^b - 1)``,
  ``q = round((x - min x) / Δ)``, ``x̂ = q Δ + min x`` — the minimum itself is stored (KIVI's and
  HQQ's convention for KV caches and weights dequantized on the fly); the full range is used and
  0 is not necessarily exact.

These are the library's two asymmetric conventions, each implemented once here; chapter 08's
quantized KV caches (:mod:`llmlab.kvcache.quantized`) call :func:`minmax_quantize`.

Granularity says over which values one ``(Δ, z)`` is shared: the whole ``tensor``, one row
(``channel`` = one output channel of a ``(out, in)`` weight, or one token of activations), or a
``group`` of ``group_size`` consecutive values of a row (GPTQ/AWQ's ``group_size=128``).

Minifloats with ``e`` exponent and ``m`` mantissa bits round to nearest-even like a hardware cast:
FP8 E4M3 (``torch.float8_e4m3fn``, max 448, no infinity) and E5M2 (``torch.float8_e5m2``, max
57344), FP4 E2M1 (values 0, 0.5, 1, 1.5, 2, 3, 4, 6). "FP8 Formats for Deep Learning" (Micikevicius
et al., arXiv 2209.05433). MX formats ("Microscaling Data Formats for Deep Learning", Rouhani et al.,
arXiv 2310.10537; OCP MX spec v1.0) share one power-of-two scale (E8M0) per block of 32 values:
``X = 2^(floor(log2 max|x|) - emax_elem)``. Taught in chapter 07 (solutions/07_quant).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

GRANULARITIES = ("tensor", "channel", "group")


def _grouped(x: torch.Tensor, granularity: str, group_size: int) -> torch.Tensor:
    """View a (rows, cols) tensor as (R, G, n): one (scale, zero) per (R, G)."""
    if granularity not in GRANULARITIES:
        raise ValueError(f"granularity must be one of {GRANULARITIES}, got {granularity!r}")
    if x.dim() != 2:
        raise ValueError(f"expected a 2-D (rows, cols) tensor, got shape {tuple(x.shape)}")
    rows, cols = x.shape
    if granularity == "tensor":
        return x.reshape(1, 1, -1)
    if granularity == "channel":
        return x.reshape(rows, 1, cols)
    if group_size <= 0 or cols % group_size:
        raise ValueError(f"group_size must divide the row length {cols}, got {group_size}")
    return x.reshape(rows, cols // group_size, group_size)


def _check_bits(bits: int) -> None:
    if not 2 <= bits <= 8:
        raise ValueError(f"bits must be in 2..8, got {bits}")


@dataclass
class QuantizedTensor:
    """Integer codes plus scale/zero per group; ``dequantize()`` gives the float tensor back.

    codes: (R, G, n) int32, scale and zero: (R, G, 1) float32 (zero is 0 when symmetric).
    """

    codes: torch.Tensor
    scale: torch.Tensor
    zero: torch.Tensor
    shape: torch.Size
    bits: int
    symmetric: bool

    def dequantize(self) -> torch.Tensor:
        return ((self.codes - self.zero) * self.scale).reshape(self.shape)


def quant_params(g: torch.Tensor, bits: int, symmetric: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale and zero point of grouped values g: (R, G, n) -> (R, G, 1) each (float32)."""
    g = g.float()
    if symmetric:
        scale = g.abs().amax(-1, keepdim=True) / (2 ** (bits - 1) - 1)
        scale = scale.clamp(min=1e-12)
        return scale, torch.zeros_like(scale)
    lo = g.amin(-1, keepdim=True).clamp(max=0)
    hi = g.amax(-1, keepdim=True).clamp(min=0)
    scale = ((hi - lo) / (2 ** bits - 1)).clamp(min=1e-12)
    return scale, torch.round(-lo / scale)


def quantize_codes(g: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, bits: int,
                   symmetric: bool) -> torch.Tensor:
    """Round to integer codes with given (broadcastable) scale and zero -> int32."""
    lo, hi = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if symmetric else (0, 2 ** bits - 1)
    return (torch.round(g.float() / scale) + zero).clamp(lo, hi).to(torch.int32)


def quantize(x: torch.Tensor, bits: int = 8, symmetric: bool = True, granularity: str = "channel",
             group_size: int = 128) -> QuantizedTensor:
    """Integer-quantize a (rows, cols) tensor with one (scale, zero) per tensor, row or group."""
    _check_bits(bits)
    g = _grouped(x, granularity, group_size)
    scale, zero = quant_params(g, bits, symmetric)
    return QuantizedTensor(quantize_codes(g, scale, zero, bits, symmetric), scale, zero, x.shape,
                           bits, symmetric)


def minmax_quantize(x: torch.Tensor, bits: int,
                    dim: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Asymmetric quantization with a float offset, min and max reduced over ``dim``.

    x: (...) float -> codes (...) uint8 in [0, 2^bits - 1], scale and offset (float32, x's shape
    with ``dim`` of size 1); ``x ≈ codes * scale + offset`` (:func:`minmax_dequantize`).
    """
    if not 1 <= bits <= 8:
        raise ValueError(f"bits must be in 1..8, got {bits}")
    lo, hi = x.amin(dim, keepdim=True), x.amax(dim, keepdim=True)
    scale = ((hi - lo) / (2 ** bits - 1)).clamp(min=1e-8).float()
    codes = ((x - lo) / scale).round().clamp(0, 2 ** bits - 1)
    return codes.to(torch.uint8), scale, lo.float()


def minmax_dequantize(codes: torch.Tensor, scale: torch.Tensor, offset: torch.Tensor,
                      dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``codes * scale + offset``, broadcast over the reduced axis, in ``dtype``."""
    return (codes.float() * scale.float() + offset.float()).to(dtype)


def fake_quantize(x: torch.Tensor, bits: int = 8, symmetric: bool = True,
                  granularity: str = "channel", group_size: int = 128) -> torch.Tensor:
    """quantize then dequantize: the float tensor the quantized model computes with."""
    return quantize(x, bits, symmetric, granularity, group_size).dequantize().to(x.dtype)


def absmax_quantize(x: torch.Tensor, bits: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-tensor symmetric quantization -> (codes int32 like x, scale () float32)."""
    q = quantize(x.reshape(1, -1), bits, True, "tensor")
    return q.codes.reshape(x.shape), q.scale.reshape(())


def zeropoint_quantize(x: torch.Tensor, bits: int = 8
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-tensor asymmetric quantization -> (codes int32 like x, scale (), zero ())."""
    q = quantize(x.reshape(1, -1), bits, False, "tensor")
    return q.codes.reshape(x.shape), q.scale.reshape(()), q.zero.reshape(())


# ---- minifloats ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class FloatFormat:
    """A minifloat: sign, ``exp_bits`` exponent bits (bias ``2^(e-1) - 1``), ``man_bits`` mantissa
    bits and its largest finite value ``max``."""

    name: str
    exp_bits: int
    man_bits: int
    max: float

    @property
    def bias(self) -> int:
        return 2 ** (self.exp_bits - 1) - 1

    @property
    def emin(self) -> int:
        """Exponent of the smallest normal number (subnormals share it)."""
        return 1 - self.bias

    @property
    def emax(self) -> int:
        """Exponent of the largest finite number."""
        return math.floor(math.log2(self.max))


E4M3 = FloatFormat("e4m3", 4, 3, 448.0)  # OCP FP8 E4M3 ("fn": no inf, one NaN code)
E5M2 = FloatFormat("e5m2", 5, 2, 57344.0)  # IEEE-like, has inf
E2M1 = FloatFormat("e2m1", 2, 1, 6.0)  # FP4 of MXFP4/NVFP4
E3M2 = FloatFormat("e3m2", 3, 2, 28.0)  # FP6
FORMATS = {f.name: f for f in (E4M3, E5M2, E2M1, E3M2)}


def _format(fmt: FloatFormat | str) -> FloatFormat:
    if isinstance(fmt, FloatFormat):
        return fmt
    if fmt not in FORMATS:
        raise ValueError(f"unknown float format {fmt!r}; expected one of {sorted(FORMATS)}")
    return FORMATS[fmt]


def round_to_float(x: torch.Tensor, fmt: FloatFormat | str, saturate: bool = True) -> torch.Tensor:
    """Round float32 values to the nearest value of a minifloat (ties to even), as a hardware cast.

    Out-of-range values clamp to ``±max`` when ``saturate``; otherwise they become ``inf`` (the
    same as ``x.to(torch.float8_e5m2)``; ``float8_e4m3fn`` has no inf and casts them to NaN).
    """
    f = _format(fmt)
    x = x.float()
    _, e = torch.frexp(x)  # x = m 2^e, 0.5 <= |m| < 1  ->  floor(log2|x|) = e - 1
    exp = (e - 1).clamp(min=f.emin)  # subnormals share the smallest exponent
    ulp = torch.exp2((exp - f.man_bits).float())
    y = torch.round(x / ulp) * ulp  # exact scaling by a power of two, then round half to even
    big = y.abs() > f.max
    y = torch.where(big, torch.sign(x) * (f.max if saturate else math.inf), y)
    return torch.where(x == 0, x, y)


def float_grid(fmt: FloatFormat | str) -> torch.Tensor:
    """Every finite non-negative value of a minifloat, sorted -> (n,) float32."""
    f = _format(fmt)
    vals = [0.0]
    for e in range(f.emin, f.emax + 1):
        for m in range(2 ** f.man_bits):
            vals.append((1 + m / 2 ** f.man_bits) * 2.0 ** e)
    vals += [m / 2 ** f.man_bits * 2.0 ** f.emin for m in range(1, 2 ** f.man_bits)]
    return torch.tensor(sorted(v for v in set(vals) if v <= f.max), dtype=torch.float32)


def int_grid(bits: int) -> torch.Tensor:
    """The symmetric int grid in units of max: k / (2^(b-1) - 1), k in [-2^(b-1), 2^(b-1) - 1]."""
    qmax = 2 ** (bits - 1) - 1
    return torch.arange(-qmax - 1, qmax + 1, dtype=torch.float32) / qmax


def fp8_quantize(x: torch.Tensor, fmt: str = "e4m3", granularity: str = "tensor",
                 group_size: int = 128) -> tuple[torch.Tensor, torch.Tensor]:
    """Scaled FP8: scale = max|x| / fmt.max per tensor/row/group, values rounded to the format.

    x: (rows, cols) -> (values in the format's grid (R, G, n) float32, scale (R, G, 1)).
    """
    f = _format(fmt)
    g = _grouped(x.float(), granularity, group_size)
    scale = (g.abs().amax(-1, keepdim=True) / f.max).clamp(min=1e-12)
    return round_to_float(g / scale, f), scale


def fake_fp8(x: torch.Tensor, fmt: str = "e4m3", granularity: str = "tensor",
             group_size: int = 128) -> torch.Tensor:
    values, scale = fp8_quantize(x, fmt, granularity, group_size)
    return (values * scale).reshape(x.shape).to(x.dtype)


# ---- MX block scaling -----------------------------------------------------------------------------

MX_ELEMENTS = {"mxfp8": E4M3, "mxfp4": E2M1, "mxfp6": E3M2}


def mx_quantize(x: torch.Tensor, fmt: str = "mxfp4", block_size: int = 32
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """OCP MX quantization along the last dim.

    x: (..., n), n a multiple of ``block_size`` -> (elements (..., n/32, 32) float32 on the element
    format's grid, exponents (..., n/32) int32 of the shared E8M0 scale ``2^exponent``).
    """
    if fmt not in MX_ELEMENTS:
        raise ValueError(f"unknown MX format {fmt!r}; expected one of {sorted(MX_ELEMENTS)}")
    if x.shape[-1] % block_size:
        raise ValueError(f"last dim {x.shape[-1]} must be a multiple of block_size {block_size}")
    elem = MX_ELEMENTS[fmt]
    blocks = x.float().reshape(*x.shape[:-1], -1, block_size)
    amax = blocks.abs().amax(-1)
    _, e = torch.frexp(amax)
    shared = torch.where(amax > 0, e - 1 - elem.emax, torch.zeros_like(e)).clamp(-127, 127)
    scaled = blocks / torch.exp2(shared.float()).unsqueeze(-1)
    return round_to_float(scaled, elem, saturate=True), shared


def mx_dequantize(elements: torch.Tensor, exponents: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`mx_quantize` -> (..., n)."""
    out = elements * torch.exp2(exponents.float()).unsqueeze(-1)
    return out.reshape(*out.shape[:-2], -1)


def fake_mx(x: torch.Tensor, fmt: str = "mxfp4", block_size: int = 32) -> torch.Tensor:
    return mx_dequantize(*mx_quantize(x, fmt, block_size)).reshape(x.shape).to(x.dtype)

