"""``QuantLinear``: a linear layer that stores packed int4/int8 weights with group scales and zeros.

Weights are kept as integer codes (two int4 codes per byte), one fp16 scale and one integer zero
point per group of ``group_size`` input columns (GPTQ/AWQ's checkpoint layout). ``forward``
dequantizes the weight and calls one matmul (``forward_reference``, the readable definition). With
``fused = True`` (or :func:`set_fused`), decode-sized fp32 inputs (1–8 rows) instead go through
:mod:`llmlab.quant.fused`, which dequantizes inside the reduction — what weight-only kernels
(Marlin, llama.cpp's k-quants) do in their tiles — so the matmul streams 4 or 8 bits per weight
from memory instead of 32 (bf16 inputs to 4-bit layers: torch's packed int4 CPU kernel). An
optional per-input-channel ``smooth`` vector divides the input first (AWQ/SmoothQuant scales
that could not be folded into a previous layer). With
``act_bits=8`` it runs W8A8: the input is quantized per token and the matmul is done in integers
(:mod:`llmlab.quant.w8a8`).

``quantize_model`` swaps every ``Linear`` of the transformer blocks for a ``QuantLinear`` built from
(possibly GPTQ/AWQ-updated) weights; the tied embedding / LM head stays in float, as in most
weight-only checkpoints. The model still takes a KV cache, so chapter 08's generation runs on it.
Taught in chapter 07 (solutions/07_quant).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from llmlab.nn import Linear
from llmlab.quant.formats import quant_params, quantize_codes
from llmlab.quant.fused import (
    fused_linear,
    packed_int4_linear,
    supports,
    supports_packed_int4,
    warn_fallback,
)
from llmlab.quant.llm_int8 import llm_int8_linear
from llmlab.quant.nf4 import pack_nibbles, unpack_nibbles
from llmlab.quant.w8a8 import w8a8_linear


def pack_int4(codes: torch.Tensor) -> torch.Tensor:
    """(rows, cols) codes in [0, 15] -> (rows, cols/2) uint8, column 2j in the high nibble."""
    rows = codes.shape[0]
    return pack_nibbles(codes.to(torch.uint8).reshape(-1)).reshape(rows, -1)


def unpack_int4(packed: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`pack_int4` -> (rows, cols) uint8."""
    return unpack_nibbles(packed.reshape(-1)).reshape(packed.shape[0], -1)


class QuantLinear(nn.Module):
    """y = (x / smooth) Ŵ^T + b with Ŵ = (q - z) * s stored as packed codes.

    qweight: (out, in/2) uint8 for <= 4 bits (two codes per byte), (out, in) uint8 above;
    scales: (out, in/group) fp16; zeros: (out, in/group) uint8. x: (..., in) -> (..., out).
    ``fused``: use the compiled fused kernel where it applies (see :mod:`llmlab.quant.fused`).
    """

    def __init__(self, in_features: int, out_features: int, bits: int = 4, group_size: int = 128,
                 bias: bool = False, act_bits: int | None = None,
                 act_granularity: str = "token", outlier_threshold: float | None = None) -> None:
        super().__init__()
        if not 2 <= bits <= 8:
            raise ValueError(f"QuantLinear stores 2- to 8-bit weights, got bits={bits}")
        if act_bits == 8 and (bits != 8 or group_size not in (0, in_features)):
            raise ValueError("W8A8 needs bits=8 and one scale per output channel (group_size=0), "
                             f"got bits={bits}, group_size={group_size}")
        group_size = group_size if group_size > 0 else in_features
        if in_features % group_size:
            raise ValueError(f"group_size {group_size} must divide in_features {in_features}")
        if act_bits not in (None, 8):
            raise ValueError(f"act_bits must be None (weight-only) or 8, got {act_bits}")
        self.in_features, self.out_features = in_features, out_features
        self.bits, self.group_size, self.act_bits = bits, group_size, act_bits
        self.act_granularity, self.outlier_threshold = act_granularity, outlier_threshold
        n_groups = in_features // group_size
        width = in_features // 2 if bits <= 4 else in_features  # codes of <= 4 bits: 2 per byte
        self.register_buffer("qweight", torch.zeros(out_features, width, dtype=torch.uint8))
        self.register_buffer("scales", torch.ones(out_features, n_groups, dtype=torch.float16))
        self.register_buffer("zeros", torch.zeros(out_features, n_groups, dtype=torch.uint8))
        self.register_buffer("bias", torch.zeros(out_features) if bias else None)
        self.register_buffer("smooth", None)
        self.fused = False

    @classmethod
    @torch.no_grad()
    def from_weight(cls, weight: torch.Tensor, bias: torch.Tensor | None = None, bits: int = 4,
                    group_size: int = 128, codes: torch.Tensor | None = None,
                    scale: torch.Tensor | None = None, zero: torch.Tensor | None = None,
                    smooth: torch.Tensor | None = None, act_bits: int | None = None,
                    act_granularity: str = "token", outlier_threshold: float | None = None
                    ) -> QuantLinear:
        """Build from a float weight (out, in), rounding to nearest (RTN) with asymmetric groups
        (symmetric per channel for W8A8, codes offset by 128), or from given ``codes`` (out, in)
        and per-group ``scale``/``zero`` (out, in/group) produced by GPTQ. ``smooth`` (in,) is
        divided out of the input (the weight is already multiplied by it). ``outlier_threshold``
        (W8A8 only) keeps input columns above it in float (LLM.int8())."""
        out_f, in_f = weight.shape
        layer = cls(in_f, out_f, bits, group_size, bias is not None, act_bits, act_granularity,
                    outlier_threshold)
        gs = layer.group_size
        if codes is None:
            g = weight.float().reshape(out_f, in_f // gs, gs)
            sym = act_bits == 8
            scale, zero = quant_params(g, bits, symmetric=sym)
            scale = scale.half().float()  # scales are stored in fp16: round against the stored one
            codes = quantize_codes(g, scale, zero, bits, symmetric=sym).reshape(out_f, in_f)
            if sym:
                codes, zero = codes + 128, zero + 128
            scale, zero = scale.squeeze(-1), zero.squeeze(-1)
        layer.qweight.copy_(pack_int4(codes) if bits <= 4 else codes.to(torch.uint8))
        layer.scales.copy_(scale.reshape(out_f, -1).half())
        layer.zeros.copy_(zero.reshape(out_f, -1).to(torch.uint8))
        if bias is not None:
            layer.bias.copy_(bias)
        if smooth is not None:
            layer.smooth = smooth.detach().float().clone()
        return layer

    def codes(self) -> torch.Tensor:
        """Unpacked integer codes (out, in) uint8."""
        return unpack_int4(self.qweight) if self.bits <= 4 else self.qweight

    def dequantize(self) -> torch.Tensor:
        """Ŵ = (q - z) * s -> (out, in) float32 (the smooth factor still applied)."""
        q = self.codes().float().view(self.out_features, -1, self.group_size)
        w = (q - self.zeros.float().unsqueeze(-1)) * self.scales.float().unsqueeze(-1)
        return w.reshape(self.out_features, self.in_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fused and x.shape[-1] == self.in_features and supports_packed_int4(self, x):
            return packed_int4_linear(self, x if self.smooth is None else x / self.smooth.to(x.dtype))
        if self.fused and x.shape[-1] == self.in_features and supports(self, x):
            try:
                return fused_linear(self, x if self.smooth is None else x / self.smooth)
            except Exception as error:  # no working compiler here: warn once, use the reference
                warn_fallback(error)
                self.fused = False
        return self.forward_reference(x)

    def forward_reference(self, x: torch.Tensor) -> torch.Tensor:
        """Dequantize the whole weight, then one matmul: the definition the fused path matches."""
        if x.shape[-1] != self.in_features:
            raise ValueError(f"QuantLinear expected input (..., {self.in_features}), "
                             f"got {tuple(x.shape)}")
        if self.smooth is not None:
            x = x / self.smooth.to(x.dtype)
        if self.act_bits == 8:
            w_codes = (self.qweight.to(torch.int16) - self.zeros.to(torch.int16)).to(torch.int8)
            if self.outlier_threshold is not None:
                return llm_int8_linear(x, w_codes, self.scales, self.bias, self.outlier_threshold)
            return w8a8_linear(x, None, self.bias, self.act_granularity, w_codes, self.scales)
        w = self.dequantize()
        return F.linear(x, w.to(x.dtype), None if self.bias is None else self.bias.to(x.dtype))

    def nbytes(self) -> int:
        """Bytes of the stored tensors (codes, scales, zeros, bias, smooth)."""
        return sum(b.numel() * b.element_size() for b in self.buffers())

    def extra_repr(self) -> str:
        act = f", act_bits={self.act_bits} ({self.act_granularity})" if self.act_bits else ""
        return (f"{self.in_features} -> {self.out_features}, bits={self.bits}, "
                f"group_size={self.group_size}{act}")


def set_fused(model: nn.Module, fused: bool = True) -> nn.Module:
    """Turn the fused decode kernel on (or off) for every :class:`QuantLinear` in ``model``."""
    for m in model.modules():
        if isinstance(m, QuantLinear):
            m.fused = fused
    return model


def block_linears(model: nn.Module) -> dict[str, nn.Module]:
    """Names -> the ``Linear`` (or already quantized) layers inside the transformer blocks."""
    return {name: m for name, m in model.named_modules()
            if name.startswith("blocks.") and isinstance(m, (Linear, nn.Linear, QuantLinear))}


def replace_module(model: nn.Module, name: str, new: nn.Module) -> None:
    """Set the sub-module at dotted path ``name`` to ``new``."""
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, new)


def quantize_model(model: nn.Module, make: Callable[[str, nn.Module], nn.Module]) -> nn.Module:
    """Replace every block linear with ``make(name, linear)`` (in place); returns the model."""
    for name, lin in list(block_linears(model).items()):
        replace_module(model, name, make(name, lin))
    return model


def rtn_quantize_model(model: nn.Module, bits: int = 4, group_size: int = 128,
                       act_bits: int | None = None) -> nn.Module:
    """Round-to-nearest baseline: every block linear -> :class:`QuantLinear` (in place)."""
    return quantize_model(model, lambda name, lin: QuantLinear.from_weight(
        lin.weight, lin.bias, bits, group_size, act_bits=act_bits))


def model_nbytes(model: nn.Module) -> int:
    """Bytes of all parameters and buffers (tied tensors once)."""
    seen, total = set(), 0
    for t in list(model.parameters()) + list(model.buffers()):
        if t.data_ptr() not in seen:
            seen.add(t.data_ptr())
            total += t.numel() * t.element_size()
    return total
