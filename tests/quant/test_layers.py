"""QuantLinear (packing, RTN, size, generation with a KV cache), W8A8 integer matmul exactness,
LLM.int8() decomposition, and parity with torchao's int8 weight-only layer."""

from __future__ import annotations

import copy

import pytest
import torch
from torchao.quantization import Int8WeightOnlyConfig, quantize_

from llmlab.model import generate
from llmlab.quant import (
    QuantLinear,
    fake_quantize,
    fake_w8a8_linear,
    int8_matmul,
    llm_int8_linear,
    model_nbytes,
    outlier_columns,
    pack_int4,
    quantize_int8,
    rtn_quantize_model,
    unpack_int4,
    w8a8_linear,
    w8a8_model,
)
from tests.quant.conftest import tiny_model


def test_int4_pack_layout_and_round_trip():
    codes = torch.randint(0, 16, (5, 12), dtype=torch.uint8)
    packed = pack_int4(codes)
    assert packed.shape == (5, 6) and packed[0, 0] == codes[0, 0] * 16 + codes[0, 1]
    assert torch.equal(unpack_int4(packed), codes)


@pytest.mark.parametrize("bits,group", [(4, 32), (4, 0), (3, 64), (8, 64)])
def test_quantlinear_equals_fake_quantized_weight(bits, group):
    torch.manual_seed(0)
    w, b, x = torch.randn(48, 128) * 0.05, torch.randn(48), torch.randn(3, 7, 128)
    layer = QuantLinear.from_weight(w, b, bits=bits, group_size=group)
    gran = "group" if group else "channel"
    ref = fake_quantize(w, bits, symmetric=False, granularity=gran, group_size=group or 128)
    # scales stored in fp16: a value at a rounding tie may take the neighbouring code
    diff = (layer.dequantize() - ref).abs()
    step = layer.scales.float().repeat_interleave(layer.group_size, 1)
    assert (diff <= 1.01 * step).all() and (diff > 0.5 * step).float().mean() < 0.01
    torch.testing.assert_close(layer(x), x @ layer.dequantize().T + b)
    packed = 48 * 128 // (2 if bits <= 4 else 1)
    n_groups = 128 // (group or 128)
    assert layer.nbytes() == packed + 48 * n_groups * (2 + 1) + 48 * 4


def test_quantlinear_errors():
    with pytest.raises(ValueError, match="2- to 8-bit"):
        QuantLinear(64, 64, bits=16)
    with pytest.raises(ValueError, match="group_size"):
        QuantLinear(64, 64, group_size=48)
    with pytest.raises(ValueError, match="W8A8"):
        QuantLinear(64, 64, bits=4, act_bits=8)
    with pytest.raises(ValueError, match="input"):
        QuantLinear(64, 32, group_size=32)(torch.randn(2, 63))


def test_quantized_model_is_smaller_and_generates_with_a_kv_cache():
    model = tiny_model()
    q = rtn_quantize_model(copy.deepcopy(model), bits=4, group_size=32)
    assert model_nbytes(q) < 0.6 * model_nbytes(model)
    idx = torch.randint(0, 101, (2, 5))
    cached = generate(q, idx, max_new_tokens=12)
    uncached = generate(q, idx, max_new_tokens=12, use_cache=False)
    assert torch.equal(cached, uncached)
    # 8-bit weights change the tiny model's logits by little
    q8 = rtn_quantize_model(copy.deepcopy(model), bits=8, group_size=32)
    logits, logits8 = model(idx), q8(idx)
    assert (logits - logits8).abs().max() < 0.02 * logits.abs().max()


def test_int8_matmul_is_exact():
    g = torch.Generator().manual_seed(0)
    for m in (3, 40):
        a = torch.randint(-128, 128, (m, 512), generator=g, dtype=torch.int8)
        b = torch.randint(-128, 128, (96, 512), generator=g, dtype=torch.int8)
        assert torch.equal(int8_matmul(a, b).long(), a.long() @ b.long().T)
    with pytest.raises(ValueError, match="int8"):
        int8_matmul(a.float(), b)


@pytest.mark.parametrize("gran", ["token", "tensor"])
def test_w8a8_integer_path_equals_float_simulation(gran):
    torch.manual_seed(0)
    x, w, b = torch.randn(2, 30, 192), torch.randn(64, 192) * 0.05, torch.randn(64)
    y = w8a8_linear(x, w, b, gran)
    torch.testing.assert_close(y, fake_w8a8_linear(x, w, b, gran), atol=1e-5, rtol=1e-5)
    rel = (y - x @ w.T - b).norm() / (x @ w.T).norm()
    assert rel < 0.02


def test_llm_int8_keeps_outlier_columns_in_float():
    torch.manual_seed(0)
    x, w = torch.randn(64, 128), torch.randn(32, 128) * 0.05
    x[:, 7] *= 40  # one outlier feature dimension
    assert outlier_columns(x, 6.0).nonzero().flatten().tolist() == [7]
    wq, sw = quantize_int8(w, dim=-1)
    exact = x @ w.T
    err_plain = (w8a8_linear(x, None, None, "token", wq, sw) - exact).norm()
    y = llm_int8_linear(x, wq, sw, None, threshold=6.0)
    err_mixed = (y - exact).norm()
    assert err_mixed < err_plain / 3
    # the decomposition by hand: float outlier column + int8 rest
    rest = x.clone()
    rest[:, 7] = 0
    by_hand = w8a8_linear(rest, None, None, "token", wq, sw) + x[:, 7:8] @ (wq[:, 7:8].float() * sw).T
    torch.testing.assert_close(y, by_hand)


def test_w8a8_quantlinear_matches_function():
    torch.manual_seed(0)
    model = tiny_model()
    q = w8a8_model(copy.deepcopy(model))
    lin = q.blocks[0].attn.q_proj
    x = torch.randn(4, 64)
    ref = model.blocks[0].attn.q_proj.weight
    y = w8a8_linear(x, ref.detach())  # QuantLinear keeps its scales in fp16: ~1e-3 apart
    torch.testing.assert_close(lin(x), y, atol=2e-3 * y.abs().max().item(), rtol=0)


@pytest.mark.parity
def test_int8_weight_only_parity_with_torchao():
    torch.manual_seed(0)
    lin = torch.nn.Linear(256, 96, bias=True)
    w, b = lin.weight.detach().clone(), lin.bias.detach().clone()
    quantize_(lin, Int8WeightOnlyConfig())
    codes, scale = lin.weight.qdata, lin.weight.scale.float()  # (96, 256) int8, (96, 1)
    # llmlab's symmetric per-channel int8 picks the same codes up to torchao's divisor (127.5
    # instead of 127): at most one step apart
    ours = QuantLinear.from_weight(w, b, bits=8, group_size=0, act_bits=8)
    ours_codes = ours.qweight.int() - 128
    assert (ours_codes - codes.int()).abs().max() <= 1
    # loading torchao's codes and scales into a QuantLinear reproduces torchao's forward
    loaded = QuantLinear.from_weight(w, b, bits=8, group_size=0, codes=codes.int() + 128,
                                     scale=scale.half().float(), zero=torch.full((96, 1), 128))
    x = torch.randn(5, 256)
    with torch.no_grad():
        ref = lin(x)
    # (torchao keeps fp32 scales, QuantLinear fp16 ones: outputs agree to ~1e-3 relative)
    torch.testing.assert_close(loaded(x), ref, atol=1e-3 * ref.abs().max().item(), rtol=0)
    torch.testing.assert_close(ours(x), ref, atol=0.02 * ref.abs().max().item(), rtol=0)
