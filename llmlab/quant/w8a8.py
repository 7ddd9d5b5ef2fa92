"""W8A8: int8 weights and int8 activations, multiplied in integer arithmetic.

``y = (s_x ⊗ s_w) ⊙ (X_q W_q^T)``: activations quantized per token (dynamic) or per tensor, weights
per output channel, both symmetric, so the int8 x int8 products accumulate exactly in int32
(``torch._int_mm``, the CPU/GPU kernel behind torchao's int8 dynamic quantization) and one float
multiply per output rescales them. The accumulator cannot overflow: ``k * 127 * 128 < 2^31`` for
``k < 132,000``. The papers that make W8A8 work on LLMs: "LLM.int8()" (arXiv 2208.07339) and
"SmoothQuant" (arXiv 2211.10438). Taught in chapter 07 (solutions/07_quant).
"""

from __future__ import annotations

import torch

from llmlab.quant.formats import quant_params, quantize_codes

ACT_GRANULARITIES = ("token", "tensor")


def quantize_int8(x: torch.Tensor, dim: int | None = -1) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric int8 with absmax over ``dim`` (None: the whole tensor).

    x: (..., k) -> (codes int8 like x, scale float32 broadcastable to x).
    """
    x = x.float()
    rows = x.reshape(1, -1) if dim is None else x.movedim(dim, -1)  # absmax over the last dim
    scale, zero = quant_params(rows, 8, symmetric=True)  # chapter 07's one absmax quantizer
    codes = quantize_codes(rows, scale, zero, 8, symmetric=True).to(torch.int8)
    if dim is None:
        return codes.reshape(x.shape), scale.reshape(())
    return codes.movedim(-1, dim), scale.movedim(-1, dim)


def int8_matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Exact integer product. a: (m, k) int8, b: (n, k) int8 -> (m, n) int32 = a @ b^T."""
    if a.dtype != torch.int8 or b.dtype != torch.int8:
        raise ValueError(f"int8_matmul expects int8 operands, got {a.dtype} and {b.dtype}")
    # Not torch._int_mm: on CPUs without AVX-512-VNNI oneDNN's int8 kernels add pairs of products
    # in saturating int16 (vpmaddubsw), so its result is not exact there. int32 operands are.
    return a.to(torch.int32) @ b.to(torch.int32).t()


def w8a8_linear(x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None = None,
                act_granularity: str = "token", w_codes: torch.Tensor | None = None,
                w_scale: torch.Tensor | None = None) -> torch.Tensor:
    """x: (..., k), w: (n, k) float (or pre-quantized ``w_codes`` int8 (n, k) with ``w_scale``
    (n, 1)) -> (..., n): both operands quantized to int8, multiplied in int32, rescaled."""
    if act_granularity not in ACT_GRANULARITIES:
        raise ValueError(f"act_granularity must be one of {ACT_GRANULARITIES}, got {act_granularity!r}")
    if w_codes is None:
        w_codes, w_scale = quantize_int8(w, dim=-1)  # per output channel: (n, 1)
    x2 = x.reshape(-1, x.shape[-1])
    xq, sx = quantize_int8(x2, dim=-1 if act_granularity == "token" else None)
    acc = int8_matmul(xq, w_codes)  # (m, n) int32, exact
    y = acc.float() * sx * w_scale.reshape(1, -1).float()
    if bias is not None:
        y = y + bias.float()
    return y.reshape(*x.shape[:-1], -1).to(x.dtype)


def fake_w8a8_linear(x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None = None,
                     act_granularity: str = "token") -> torch.Tensor:
    """The same computation with dequantized float operands (what a simulator does)."""
    xq, sx = quantize_int8(x, dim=-1 if act_granularity == "token" else None)
    wq, sw = quantize_int8(w, dim=-1)
    return torch.nn.functional.linear(xq.float() * sx, wq.float() * sw, bias)
