"""Fused RMSNorm in Triton: y = x * rsqrt(mean(x^2) + eps) * w, forward and backward.

One program normalises one row (``d`` fits one block): the row is read once, the statistics stay
in registers, and only ``rstd`` (one float per row) is saved for the backward
("Root Mean Square Layer Normalization", Zhang & Sennrich, arXiv 1910.07467). With
``xhat = x * rstd``: ``dx = rstd * (g - xhat * mean(g * xhat))`` where ``g = dy * w``, and
``dw = sum_rows dy * xhat``. Statistics in fp32 as :func:`llmlab.nn.rms_norm` computes them.
Taught in chapter 03 (solutions/03_attention).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _rmsnorm_fwd(x_ptr, w_ptr, y_ptr, rstd_ptr, d, eps, BLOCK: tl.constexpr):
    row = tl.program_id(0)
    cols = tl.arange(0, BLOCK)
    ok = cols < d
    x = tl.load(x_ptr + row * d + cols, mask=ok, other=0.0).to(tl.float32)
    w = tl.load(w_ptr + cols, mask=ok, other=0.0).to(tl.float32)
    rstd = 1.0 / tl.sqrt(tl.sum(x * x, axis=0) / d + eps)
    tl.store(rstd_ptr + row, rstd)
    tl.store(y_ptr + row * d + cols, (x * rstd * w).to(y_ptr.dtype.element_ty), mask=ok)


@triton.jit
def _rmsnorm_bwd(dy_ptr, x_ptr, w_ptr, rstd_ptr, dx_ptr, dw_part_ptr, d, BLOCK: tl.constexpr):
    row = tl.program_id(0)
    cols = tl.arange(0, BLOCK)
    ok = cols < d
    x = tl.load(x_ptr + row * d + cols, mask=ok, other=0.0).to(tl.float32)
    dy = tl.load(dy_ptr + row * d + cols, mask=ok, other=0.0).to(tl.float32)
    w = tl.load(w_ptr + cols, mask=ok, other=0.0).to(tl.float32)
    rstd = tl.load(rstd_ptr + row)
    xhat = x * rstd
    g = dy * w
    dx = rstd * (g - xhat * (tl.sum(g * xhat, axis=0) / d))
    tl.store(dx_ptr + row * d + cols, dx.to(dx_ptr.dtype.element_ty), mask=ok)
    tl.store(dw_part_ptr + row * d + cols, dy * xhat, mask=ok)  # summed over rows afterwards


class RMSNormFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, eps):  # type: ignore[override]
        shape = x.shape
        x2 = x.reshape(-1, shape[-1]).contiguous()
        rows, d = x2.shape
        y = torch.empty_like(x2)
        rstd = torch.empty(rows, dtype=torch.float32, device=x.device)
        block = triton.next_power_of_2(d)
        _rmsnorm_fwd[(rows,)](x2, weight, y, rstd, d, eps, BLOCK=block)
        ctx.save_for_backward(x2, weight, rstd)
        ctx.shape = shape
        return y.view(shape)

    @staticmethod
    def backward(ctx, dy):  # type: ignore[override]
        x2, weight, rstd = ctx.saved_tensors
        rows, d = x2.shape
        dy2 = dy.reshape(rows, d).contiguous()
        dx = torch.empty_like(x2)
        dw_part = torch.empty(rows, d, dtype=torch.float32, device=x2.device)
        _rmsnorm_bwd[(rows,)](dy2, x2, weight, rstd, dx, dw_part, d,
                              BLOCK=triton.next_power_of_2(d))
        return dx.view(ctx.shape), dw_part.sum(0).to(weight.dtype), None


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Fused RMSNorm, differentiable. x: (..., d), weight: (d,) -> (..., d) in x's dtype;
    equal to :func:`llmlab.nn.rms_norm`."""
    if x.shape[-1] != weight.shape[0] or weight.dim() != 1:
        raise ValueError(f"rms_norm expects x (..., d) and weight (d,); got x {tuple(x.shape)}, "
                         f"weight {tuple(weight.shape)}")
    return RMSNormFunction.apply(x, weight, eps)
