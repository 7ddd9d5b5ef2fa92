"""softmax, log_softmax, cross_entropy, GELU and SiLU against PyTorch's kernels."""

import pytest
import torch
import torch.nn.functional as F

from llmlab.nn import cross_entropy, fast_cross_entropy, gelu_tanh, log_softmax, silu, softmax


def test_softmax_matches_torch_and_survives_large_logits():
    x = torch.randn(3, 5, 7) * 50 + 1000  # exp(1000) overflows without the max shift
    torch.testing.assert_close(softmax(x, dim=-1), torch.softmax(x, dim=-1))
    torch.testing.assert_close(softmax(x, dim=1), torch.softmax(x, dim=1))
    torch.testing.assert_close(log_softmax(x), torch.log_softmax(x, -1))


def test_softmax_fully_masked_row_is_zero_not_nan():
    x = torch.tensor([[float("-inf")] * 3, [0.0, float("-inf"), 1.0]])
    y = softmax(x)
    assert not torch.isnan(y).any()
    assert torch.equal(y[0], torch.zeros(3))
    torch.testing.assert_close(y[1], torch.softmax(x[1], -1))


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy_matches_torch_with_ignore_index(reduction):
    logits = torch.randn(4, 6, 11, requires_grad=True)
    targets = torch.randint(0, 11, (4, 6))
    targets[0, :3] = -100
    ours = cross_entropy(logits, targets, reduction=reduction)
    ref = F.cross_entropy(logits.transpose(1, 2), targets, reduction=reduction)
    torch.testing.assert_close(ours, ref)
    (g1,) = torch.autograd.grad(ours.sum(), logits)
    (g2,) = torch.autograd.grad(ref.sum(), logits)
    torch.testing.assert_close(g1, g2)


def test_cross_entropy_bf16_logits_are_upcast():
    logits = torch.randn(8, 50).bfloat16()
    targets = torch.randint(0, 50, (8,))
    got = cross_entropy(logits, targets)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, F.cross_entropy(logits.float(), targets))


def test_cross_entropy_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="leading"):
        cross_entropy(torch.randn(2, 3, 5), torch.zeros(2, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="reduction"):
        cross_entropy(torch.randn(2, 5), torch.zeros(2, dtype=torch.long), reduction="avg")


def test_gelu_and_silu_match_torch():
    x = torch.linspace(-8, 8, 1001)
    torch.testing.assert_close(gelu_tanh(x), F.gelu(x, approximate="tanh"))
    torch.testing.assert_close(silu(x), F.silu(x))


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_fast_cross_entropy_agrees_with_the_readable_one(reduction):
    logits = (torch.randn(3, 5, 13) * 20).requires_grad_()
    targets = torch.randint(0, 13, (3, 5))
    targets[1] = -100
    a = cross_entropy(logits, targets, reduction=reduction)
    b = fast_cross_entropy(logits, targets, reduction=reduction)
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(torch.autograd.grad(a.sum(), logits)[0],
                               torch.autograd.grad(b.sum(), logits)[0])
    everything_ignored = torch.full((2, 3), -100)
    assert fast_cross_entropy(torch.randn(2, 3, 4), everything_ignored).item() == 0.0
    with pytest.raises(ValueError, match="leading"):
        fast_cross_entropy(torch.randn(2, 3, 5), torch.zeros(3, 2, dtype=torch.long))
