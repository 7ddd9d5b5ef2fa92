"""Number formats: int absmax/zero-point at each granularity, FP8 = torch casts, E2M1, MX = torchao."""

from __future__ import annotations

import pytest
import torch
from torchao.prototype.mx_formats.mx_tensor import to_mx

from llmlab.quant import (
    E4M3,
    E5M2,
    absmax_quantize,
    fake_quantize,
    float_grid,
    int_grid,
    mx_dequantize,
    mx_quantize,
    quantize,
    round_to_float,
    zeropoint_quantize,
)


def test_absmax_and_zero_point_by_hand():
    x = torch.tensor([-1.0, 0.0, 0.5, 2.0])
    q, s = absmax_quantize(x, bits=8)
    assert s.item() == pytest.approx(2 / 127)
    assert q.tolist() == [-64, 0, 32, 127]  # round(-63.5) = -64 (half to even)
    q, s, z = zeropoint_quantize(x, bits=8)
    assert s.item() == pytest.approx(3 / 255) and z.item() == 85
    assert q.tolist() == [0, 85, 127, 255]  # 0.5 / (3/255) = 42.5 -> 42 (half to even)
    back = (q - z) * s
    assert (back - x).abs().max() <= s / 2 + 1e-6


@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("bits", [3, 4, 8])
def test_round_trip_error_is_half_a_step(symmetric, bits):
    torch.manual_seed(0)
    w = torch.randn(16, 128)
    q = quantize(w, bits, symmetric, "group", 32)
    assert q.codes.shape == (16, 4, 32) and q.scale.shape == (16, 4, 1)
    lo, hi = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if symmetric else (0, 2 ** bits - 1)
    assert q.codes.min() >= lo and q.codes.max() <= hi
    err = (q.dequantize() - w).abs().view(16, 4, 32)
    assert (err <= q.scale / 2 + 1e-6).all()


def test_finer_granularity_is_more_accurate():
    torch.manual_seed(0)
    w = torch.randn(64, 256) * torch.logspace(-1, 1, 64).unsqueeze(1)  # rows of different scale
    err = {g: (fake_quantize(w, 4, True, g, 32) - w).pow(2).mean().item()
           for g in ("tensor", "channel", "group")}
    assert err["group"] < err["channel"] < err["tensor"]


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="granularity"):
        quantize(torch.randn(4, 8), granularity="row")
    with pytest.raises(ValueError, match="group_size"):
        quantize(torch.randn(4, 10), granularity="group", group_size=4)
    with pytest.raises(ValueError, match="bits"):
        quantize(torch.randn(4, 8), bits=1)
    with pytest.raises(ValueError, match="format"):
        round_to_float(torch.randn(3), "e9m9")


@pytest.mark.parametrize("fmt,dtype", [(E4M3, torch.float8_e4m3fn), (E5M2, torch.float8_e5m2)])
def test_fp8_rounding_equals_torch_casts(fmt, dtype):
    torch.manual_seed(0)
    grid = float_grid(fmt)
    mids = (grid[1:] + grid[:-1]) / 2  # exact ties: round half to even
    wide = torch.randn(20000) * torch.exp2(torch.randint(-22, 14, (20000,)).float())
    x = torch.cat([grid, mids, wide])
    x = torch.cat([x, -x])
    x = x[x.abs() <= fmt.max]
    assert torch.equal(round_to_float(x, fmt), x.to(dtype).float())
    every = torch.arange(256, dtype=torch.uint8).view(dtype).float()
    assert torch.equal(every[every.isfinite() & (every >= 0)].unique(), grid)
    assert round_to_float(torch.tensor([1e6]), fmt).item() == fmt.max  # saturates


def test_e5m2_overflow_to_inf_without_saturation():
    big = torch.tensor([1e6, -1e6])
    assert torch.equal(round_to_float(big, "e5m2", saturate=False), big.to(torch.float8_e5m2).float())


def test_fp4_and_int_grids():
    assert float_grid("e2m1").tolist() == [0, 0.5, 1, 1.5, 2, 3, 4, 6]
    assert int_grid(4)[:2].tolist() == pytest.approx([-8 / 7, -1.0]) and len(int_grid(4)) == 16


@pytest.mark.parity
@pytest.mark.parametrize("fmt,dtype", [("mxfp8", torch.float8_e4m3fn), ("mxfp4", torch.float4_e2m1fn_x2)])
def test_mx_equals_torchao(fmt, dtype):
    from torchao.prototype.mx_formats.kernels import f4_unpacked_to_f32, unpack_uint4

    torch.manual_seed(0)
    x = torch.randn(16, 128) * 3
    x[0, :32] *= 1000  # one block with a large range
    scale, data = to_mx(x, dtype, 32)
    elems, exps = mx_quantize(x, fmt)
    assert torch.equal(scale.view(torch.uint8).int().reshape(exps.shape) - 127, exps)
    ref = data.float() if fmt == "mxfp8" else f4_unpacked_to_f32(unpack_uint4(data.view(torch.uint8)))
    assert torch.equal(ref.reshape(elems.shape), elems)
    back = mx_dequantize(elems, exps)
    assert back.shape == x.shape
    assert ((back - x).abs() / x.abs().reshape(16, 4, 32).amax(-1).repeat_interleave(32, -1)).max() < 0.26
