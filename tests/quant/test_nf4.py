"""NF4 (QLoRA, arXiv 2305.14314): code book constants, packing, double quantization, torchao parity."""

from __future__ import annotations

import pytest
import torch
from torchao.quantization.quantize_.workflows.nf4.nf4_tensor import NF4Tensor
from torchao.quantization.quantize_.workflows.nf4.nf4_tensor import to_nf4 as ao_to_nf4

from llmlab.quant import nf4

# QLoRA appendix E, as printed in the paper.
PAPER = [-1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
         -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
         0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
         0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0]


def test_code_book_is_the_papers_and_derives_from_normal_quantiles():
    assert list(nf4.NF4_CODE) == PAPER
    torch.testing.assert_close(nf4.nf4_code_book(), nf4.nf4_table(), atol=2e-7, rtol=0)
    assert nf4.nf4_table()[7] == 0 and (nf4.nf4_table().diff() > 0).all()


def test_round_to_code_is_nearest():
    code = nf4.nf4_table()
    x = torch.linspace(-1, 1, 10001)
    brute = (x[:, None] - code).abs().argmin(dim=1)
    assert torch.equal(nf4.round_to_code(x, code).long(), brute)


def test_pack_unpack_round_trip_and_nibble_order():
    codes = torch.randint(0, 16, (1000,), dtype=torch.uint8)
    assert torch.equal(nf4.unpack_nibbles(nf4.pack_nibbles(codes)), codes)
    assert nf4.pack_nibbles(torch.tensor([1, 2], dtype=torch.uint8)).item() == 0x12
    with pytest.raises(ValueError, match="even"):
        nf4.pack_nibbles(torch.zeros(3, dtype=torch.uint8))


def test_double_quantization_error_is_small():
    s = torch.rand(1024) * 0.1 + 0.05
    q, factor, mean = nf4.double_quantize(s, 256)
    assert q.dtype == torch.int8 and factor.shape == (4,)
    back = nf4.double_dequantize(q, factor, mean, s.numel())
    c = (s - s.mean()).view(4, 256)
    step = 2 * c.abs().amax(1, keepdim=True) / 256
    err = (back - s).view(4, 256).abs()
    # round to nearest: half a step, except values near +absmax, clamped from +128 to 127
    assert (err <= step + 1e-6).all()
    half = err <= step / 2 + 1e-6
    assert half[c < 0.99 * c.abs().amax(1, keepdim=True)].all()


@pytest.mark.parity
@pytest.mark.parametrize("shape", [(128, 512), (256, 256)])
def test_round_trip_equals_torchao_nf4tensor(shape):
    torch.manual_seed(0)
    w = torch.randn(shape) * 0.02
    ref = ao_to_nf4(w, block_size=64, scaler_block_size=256)
    assert isinstance(ref, NF4Tensor)
    ao_code = ref.nf4  # torchao stores the paper's constants rounded to 4 digits
    torch.testing.assert_close(ao_code, nf4.nf4_table(), atol=5e-5, rtol=0)
    ours = nf4.NF4Weight.from_float(w, code=ao_code)
    # Same codes, same int8 scales and factors as torchao with torchao's (4-digit) code book ...
    assert torch.equal(ours.packed, ref.quantized_data)
    assert torch.equal(ours.scales, ref.quantized_scalers)
    torch.testing.assert_close(ours.scale_factor, ref.quantization_factor)
    torch.testing.assert_close(ours.dequantize(code=ao_code),
                               ref.get_original_weight(), atol=1e-6, rtol=1e-6)
    # ... and with the paper's exact constants only values at a midpoint pick the neighbouring code.
    exact = nf4.to_nf4(w)
    diff = nf4.unpack_nibbles(exact.packed).int() - nf4.unpack_nibbles(ref.quantized_data).int()
    assert (diff != 0).float().mean() < 1e-3 and diff.abs().max() <= 1
    same = (diff == 0).view(shape)
    torch.testing.assert_close(exact.dequantize()[same], ref.get_original_weight()[same],
                               atol=2e-4, rtol=0)


def test_quantization_error_and_storage():
    torch.manual_seed(1)
    w = torch.randn(300, 70)  # 21000 values: not a multiple of the block, padded
    q = nf4.to_nf4(w)
    back = q.dequantize()
    assert back.shape == w.shape and back.dtype == w.dtype
    # relative RMS error of 4-bit NF4 on Gaussian data is ~ 0.1
    rel = ((back - w).pow(2).mean() / w.pow(2).mean()).sqrt()
    assert 0.05 < rel < 0.13
    assert 4.0 < q.bits_per_weight() < 4.25  # scales padded to a block of 256
    # QLoRA's 4 + 8/64 + 32/(64*256) = 4.127 bits per weight on an aligned matrix
    assert abs(nf4.to_nf4(torch.randn(512, 512)).bits_per_weight() - 4.127) < 1e-3
    plain = nf4.to_nf4(w, double_quant=False)
    assert plain.bits_per_weight() > 4.45
    assert (plain.dequantize() - w).abs().max() <= (back - w).abs().max() + 1e-3


def test_nf4_beats_uniform_int4_on_normal_weights():
    torch.manual_seed(2)
    w = torch.randn(256, 256)
    w_nf4 = nf4.to_nf4(w, double_quant=False).dequantize()
    blocks = w.reshape(-1, 64)
    scale = blocks.abs().amax(1, keepdim=True) / 7
    int4 = ((blocks / scale).round().clamp(-8, 7) * scale).reshape(w.shape)
    assert (w_nf4 - w).pow(2).mean() < (int4 - w).pow(2).mean()


def test_nf4_linear_and_errors():
    torch.manual_seed(3)
    w, x = torch.randn(64, 128), torch.randn(5, 128, requires_grad=True)
    q = nf4.to_nf4(w)
    y = nf4.nf4_linear(x, q)
    torch.testing.assert_close(y, x @ q.dequantize().T)
    y.sum().backward()
    assert x.grad is not None
    with pytest.raises(ValueError, match="float"):
        nf4.to_nf4(torch.ones(64, dtype=torch.int32))
