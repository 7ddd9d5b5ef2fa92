"""The fused weight-only decode kernels (llmlab.quant.fused) against QuantLinear's
dequantize-then-matmul reference: the kernels' arithmetic run eagerly over many shapes, groups,
bit widths and batch sizes (cheap), the compiled kernels on small layers (one compile in the
default run, the rest marked slow), the cases that stay on the reference, and the fallback when
no C++ compiler works.

Tolerance: the fused sum regroups an fp32 reduction, so it matches the reference to
rtol=1e-5 and atol=1e-5 * max|reference| (round-off of a length-K fp32 sum, not a code change)."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch._inductor.exc

from llmlab.quant import QuantLinear, pack_int4, set_fused
from llmlab.quant import fused as fused_mod
from llmlab.quant.fused import MAX_ROWS, fused_linear, supports, supports_packed_int4

EAGER = lambda kernel, shape: kernel  # noqa: E731  (runs the kernels' arithmetic without compiling)


def close(fast: torch.Tensor, ref: torch.Tensor) -> None:
    torch.testing.assert_close(fast, ref, rtol=1e-5, atol=1e-5 * ref.abs().max().item())


def fallbacks(caught: list) -> list[str]:
    return [str(w.message) for w in caught if str(w.message).startswith("QuantLinear:")]


def layer(out_f: int, in_f: int, bits: int, group: int, bias: bool = False,
          smooth: bool = False, seed: int = 0) -> QuantLinear:
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(out_f, in_f, generator=g)
    b = torch.randn(out_f, generator=g) if bias else None
    s = torch.rand(in_f, generator=g) + 0.5 if smooth else None
    return QuantLinear.from_weight(w * (s if smooth else 1), b, bits, group, smooth=s)


@pytest.mark.parametrize("bits", [8, 6, 4, 3, 2])
@pytest.mark.parametrize("out_f,in_f,group", [(48, 64, 16), (40, 96, 32), (33, 128, 128),
                                              (17, 256, 0), (64, 192, 64)])
@pytest.mark.parametrize("batch", [1, 2, 5, 8])
def test_kernel_arithmetic_matches_reference(bits, out_f, in_f, group, batch):
    q = layer(out_f, in_f, bits, group, bias=batch % 2 == 0, smooth=batch == 5, seed=batch)
    x = torch.randn(batch, in_f, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert supports(q, x)
        close(fused_linear(q, x / q.smooth if q.smooth is not None else x, EAGER),
              q.forward_reference(x))


def test_kernel_keeps_leading_dimensions():
    q = layer(24, 64, 4, 32, bias=True)
    x = torch.randn(2, 3, 64)
    with torch.no_grad():
        y = fused_linear(q, x, EAGER)
        assert y.shape == (2, 3, 24)
        close(y, q.forward_reference(x))


def test_kernel_uses_the_zero_point_and_the_scale():
    """A wrong formula (zero point or scale dropped) is caught: both are far from neutral here."""
    q = layer(16, 64, 4, 16)
    q.zeros.fill_(5)
    q.scales.mul_(3)
    x = torch.randn(1, 64)
    with torch.no_grad():
        close(fused_linear(q, x, EAGER), q.forward_reference(x))


@pytest.mark.parametrize("bits,group,batch", [(4, 32, 3)])
def test_compiled_kernel_matches_reference(bits, group, batch):
    """One compile (the nibble kernel, batch bucket 2–8) in the default run."""
    q = set_fused(layer(40, 96, bits, group, bias=True))
    x = torch.randn(batch, 96)
    with torch.no_grad(), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        y = q(x)
    assert q.fused and not fallbacks(caught), "the compiled kernel fell back to the reference"
    close(y, q.forward_reference(x))


@pytest.mark.slow
@pytest.mark.parametrize("bits,group", [(8, 32), (8, 0), (4, 16), (3, 32)])
@pytest.mark.parametrize("batch", [1, 2, 8])
def test_compiled_kernels_match_reference(bits, group, batch):
    q = set_fused(layer(56, 128, bits, group, smooth=True))
    x = torch.randn(batch, 128)
    with torch.no_grad(), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        y = q(x)
    assert q.fused and not fallbacks(caught)
    close(y, q.forward_reference(x))


def test_cases_outside_the_fused_kernel_stay_on_the_reference():
    q = layer(16, 64, 4, 32)
    assert not supports(q, torch.randn(MAX_ROWS + 1, 64))  # prefill: dequantize + GEMM
    assert not supports(q, torch.randn(2, 64, dtype=torch.float64))
    x = torch.randn(1, 64, requires_grad=True)
    assert not supports(q, x)  # training needs the autograd path
    with torch.no_grad():
        assert supports(q, x)
    odd = QuantLinear.from_weight(torch.randn(8, 18), None, 4, 3)  # a group splits a byte
    assert not supports(odd, torch.randn(1, 18))
    w8a8 = QuantLinear.from_weight(torch.randn(8, 16), None, 8, 0, act_bits=8)
    assert not supports(w8a8, torch.randn(1, 16))
    # ... and such layers still compute the reference with fused on
    set_fused(odd)
    x = torch.randn(2, 18)
    with torch.no_grad():
        assert torch.equal(odd(x), odd.forward_reference(x))


def test_wrong_input_width_is_a_clear_error():
    q = set_fused(layer(16, 64, 8, 32))
    with pytest.raises(ValueError, match=r"expected input \(\.\.\., 64\)"):
        q(torch.randn(1, 63))


def test_no_compiler_falls_back_with_one_warning(monkeypatch):
    """A machine without a working C++ compiler: inductor raises at the first call; the layer
    warns in one line, returns the reference result, and does not try again."""
    calls = []

    def broken(kernel, shape):
        def run(*args):
            calls.append(kernel.__name__)
            raise torch._inductor.exc.InvalidCxxCompiler()
        return run

    monkeypatch.setattr(fused_mod, "compiled", broken)
    q = set_fused(layer(24, 64, 4, 32))
    x = torch.randn(2, 64)
    with torch.no_grad(), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        y = q(x)
        y2 = q(x)
    messages = fallbacks(caught)
    assert len(messages) == 1 and "\n" not in messages[0], messages
    assert "No working C++ compiler" in messages[0] and "reference" in messages[0]
    assert calls == ["nibble_kernel"] and not q.fused
    assert torch.equal(y, q.forward_reference(x)) and torch.equal(y2, y)


@pytest.mark.parametrize("out_f,in_f,group", [(48, 64, 32), (32, 256, 128), (16, 128, 64)])
@pytest.mark.parametrize("batch", [1, 4])
def test_bf16_int4_uses_torch_packed_kernel_and_matches_reference(out_f, in_f, group, batch):
    """bf16 inputs to 4-bit layers go through torch's packed int4 CPU kernel; the reference in
    bf16 rounds the dequantized weight and the output to bf16 too, so they agree to bf16
    precision (rtol 2e-2, atol 1e-2 * max|reference|)."""
    q = set_fused(layer(out_f, in_f, 4, group, bias=True, seed=batch))
    x = torch.randn(batch, in_f).bfloat16()
    assert supports_packed_int4(q, x) and not supports(q, x)
    with torch.no_grad():
        y, ref = q(x), q.forward_reference(x)
    assert y.dtype == torch.bfloat16 and hasattr(q, "_packed_int4")
    torch.testing.assert_close(y.float(), ref.float(), rtol=2e-2,
                               atol=1e-2 * ref.abs().max().item())
    q.qweight.copy_(pack_int4(torch.randint(0, 16, (out_f, in_f))))  # new codes: repacked
    with torch.no_grad():
        ref = q.forward_reference(x).float()
        torch.testing.assert_close(q(x).float(), ref, rtol=2e-2, atol=1e-2 * ref.abs().max().item())


def test_bf16_outside_the_packed_kernel_stays_on_the_reference():
    x = torch.randn(1, 64).bfloat16()
    assert not supports_packed_int4(layer(40, 64, 4, 32), x)  # out_features not a multiple of 16
    assert not supports_packed_int4(layer(48, 64, 4, 16), x)  # group size torch does not take
    assert not supports_packed_int4(layer(48, 64, 8, 32), x)  # 8-bit codes
    q = set_fused(layer(40, 64, 4, 32))
    with torch.no_grad():
        assert torch.equal(q(x), q.forward_reference(x))
