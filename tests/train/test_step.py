"""accumulated_step: micro-batches add up to one big batch; clipping bounds the global norm."""

import copy

import pytest
import torch

from llmlab.model import GPT, GPTConfig
from llmlab.nn import fast_cross_entropy
from llmlab.train import accumulated_step


def _model() -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig.llama_style(vocab_size=32, block_size=8, d_model=16, n_layer=1, n_head=2,
                                     n_kv_head=1, d_ff=32))


def test_two_micro_batches_equal_one_batch():
    x, y = torch.randint(0, 32, (4, 8)), torch.randint(0, 32, (4, 8))
    a, b = _model(), _model()
    opt_a, opt_b = torch.optim.SGD(a.parameters(), lr=0.1), torch.optim.SGD(b.parameters(), lr=0.1)
    loss_a, norm_a = accumulated_step(a, opt_a, [(x, y)], fast_cross_entropy, 1e9)
    loss_b, norm_b = accumulated_step(b, opt_b, [(x[:2], y[:2]), (x[2:], y[2:])], fast_cross_entropy, 1e9)
    assert loss_a == pytest.approx(loss_b, rel=1e-5) and norm_a == pytest.approx(norm_b, rel=1e-4)
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(p, q, atol=1e-6, rtol=1e-5)
    assert all(p.grad is None for p in a.parameters())


def test_clipping_scales_the_update_to_max_norm():
    x, y = torch.randint(0, 32, (2, 8)), torch.randint(0, 32, (2, 8))
    m = _model()
    before = copy.deepcopy(m)
    _, norm = accumulated_step(m, torch.optim.SGD(m.parameters(), lr=1.0), [(x, y)], fast_cross_entropy, 0.01)
    step = torch.sqrt(sum(((p - q) ** 2).sum() for p, q in zip(before.parameters(), m.parameters())))
    assert norm > 0.01 and step.item() == pytest.approx(0.01, rel=1e-3)
    with pytest.raises(ValueError, match="micro-batch"):
        accumulated_step(m, torch.optim.SGD(m.parameters(), lr=1.0), [], fast_cross_entropy)


def test_loss_of_is_the_objective_and_exactly_one_is_given():
    """loss_of(x, y) replaces loss_fn(model(x), y): the same objective gives the same step."""
    x, y = torch.randint(0, 32, (4, 8)), torch.randint(0, 32, (4, 8))
    a, b = _model(), _model()
    opt_a, opt_b = torch.optim.SGD(a.parameters(), lr=0.1), torch.optim.SGD(b.parameters(), lr=0.1)
    got_a = accumulated_step(a, opt_a, [(x[:2], y[:2]), (x[2:], y[2:])], fast_cross_entropy)
    got_b = accumulated_step(b, opt_b, [(x[:2], y[:2]), (x[2:], y[2:])], None,
                             loss_of=lambda xb, yb: fast_cross_entropy(b(xb), yb))
    assert got_a == got_b
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.equal(p, q)
    for loss_fn, loss_of in ((None, None), (fast_cross_entropy, lambda xb, yb: b(xb).sum())):
        with pytest.raises(ValueError, match="exactly one"):
            accumulated_step(b, opt_b, [(x, y)], loss_fn, loss_of=loss_of)
