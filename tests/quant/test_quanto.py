"""Parity of llmlab's int8 and int4 weight quantization with optimum-quanto (Hugging Face's
quantization library): same weights -> the same integer codes, scales and zero points up to the
fp16 rounding of QuantLinear's scales, and the same layer outputs within quanto's tolerance."""

from __future__ import annotations

import types

import pytest
import torch
from optimum.quanto import MaxOptimizer, WeightQBitsTensor, freeze, qint4, qint8, quantize

from llmlab.quant import QuantLinear


@pytest.fixture(autouse=True)
def _reference_unpack(monkeypatch):
    """quanto unpacks int4 codes on CPU with a C++ extension it compiles on first use (minutes on
    two cores, a compiler needed, and a stale build lock waits forever): the parity here is of
    codes and scales, so unpack as quanto's PyTorch reference (library/unpack.py) does: value i of
    each byte in bits [bits * i, bits * (i + 1)), the rows of value i stacked after those of i - 1."""
    from optimum.quanto.library.extensions import cpp

    def unpack(packed: torch.Tensor, bits: int) -> torch.Tensor:
        mask = 2**bits - 1
        return torch.cat([(packed >> (bits * i)) & mask for i in range(8 // bits)]).to(torch.uint8)

    monkeypatch.setattr(cpp.ext, "_lib", types.SimpleNamespace(unpack=unpack))


def _quanto_linear(lin: torch.nn.Linear, qtype) -> torch.nn.Module:
    model = torch.nn.Sequential(lin)
    quantize(model, weights=qtype)
    freeze(model)
    return model


def _close(a: torch.Tensor, b: torch.Tensor, rel: float) -> None:
    torch.testing.assert_close(a, b, atol=rel * b.abs().max().item(), rtol=0)


@pytest.mark.parity
def test_int8_per_channel_matches_quanto():
    torch.manual_seed(0)
    lin = torch.nn.Linear(256, 96)
    w, b = lin.weight.detach().clone(), lin.bias.detach().clone()
    ref = _quanto_linear(lin, qint8)
    qw = ref[0].weight  # symmetric per output channel: codes (96, 256) int8, scale (96, 1) fp32
    codes, scale = qw._data.int(), qw._scale.float()
    ours = QuantLinear.from_weight(w, b, bits=8, group_size=0, act_bits=8)
    diff = (ours.qweight.int() - 128 - codes).abs()
    assert diff.max() <= 1 and (diff > 0).float().mean() < 0.05  # only fp16-scale ties move
    torch.testing.assert_close(ours.scales.float(), scale, atol=0, rtol=1e-3)
    x = torch.randn(5, 256)
    with torch.no_grad():
        y = ref(x)
        loaded = QuantLinear.from_weight(w, b, bits=8, group_size=0, codes=codes + 128,
                                         scale=scale, zero=torch.full((96, 1), 128))
        _close(loaded(x), y, 1e-3)  # quanto's codes in a QuantLinear: its output (fp16 scales)
        _close(ours(x), y, 1e-2)


@pytest.mark.parity
def test_int4_groups_match_quanto():
    torch.manual_seed(0)
    lin = torch.nn.Linear(256, 96)
    w, b = lin.weight.detach().clone(), lin.bias.detach().clone()
    # quanto's zero-point int4: min/max scale per group of 128, integer shift = round(-min/scale)
    scale, shift = MaxOptimizer()(w, qint4, axis=0, group_size=128, zeropoint=True)
    qw = WeightQBitsTensor.quantize(w, qint4, 0, 128, scale, shift)
    codes = qw._data.unpack().int().reshape(96, 256)  # groups are contiguous along each row
    ours = QuantLinear.from_weight(w, b, bits=4, group_size=128)
    assert torch.equal(ours.zeros.int().reshape(-1), shift.int().reshape(-1))
    torch.testing.assert_close(ours.scales.float().reshape(-1, 1), scale, atol=0, rtol=1e-3)
    diff = (ours.codes().int() - codes).abs()
    assert diff.max() <= 1 and (diff > 0).float().mean() < 0.01
    loaded = QuantLinear.from_weight(w, b, bits=4, group_size=128, codes=codes,
                                     scale=scale.view(96, 2), zero=shift.view(96, 2))
    _close(loaded.dequantize(), qw.dequantize(), 1e-3)
    # quanto's default int4 layer keeps a float shift (zero not rounded to an integer): a slightly
    # different grid, so compare the error each makes against the float layer
    x = torch.randn(64, 256)
    with torch.no_grad():
        y = lin(x)
        ref = _quanto_linear(lin, qint4)
        err_ours, err_ref = (ours(x) - y).norm(), (ref(x) - y).norm()
    assert err_ours < 1.25 * err_ref and err_ref < 1.25 * err_ours, (err_ours, err_ref)
