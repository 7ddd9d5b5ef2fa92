"""Masked reductions on empty slices, and the per-token losses behind the reduced ones."""

from __future__ import annotations

import math

import pytest
import torch

from llmlab.align import (
    grpo_loss,
    grpo_token_losses,
    kl_estimate,
    masked_mean,
    ppo_policy_loss,
    ppo_token_losses,
    ppo_value_loss,
)


def test_masked_mean_of_an_empty_slice_is_nan_as_torch_mean():
    x = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    mask = torch.tensor([[1, 1, 0], [0, 0, 0]])
    rows = masked_mean(x, mask, dim=1)
    assert rows[0] == 1.5 and math.isnan(rows[1])
    assert math.isnan(float(torch.empty(0).mean()))  # the semantics it follows
    assert math.isnan(float(masked_mean(x, torch.zeros_like(mask))))
    assert masked_mean(x, mask) == 1.5


def test_masked_mean_rejects_a_mask_of_another_shape():
    with pytest.raises(ValueError, match="must match"):
        masked_mean(torch.ones(2, 3), torch.ones(2, 1))


def test_losses_raise_on_a_batch_with_no_token_instead_of_returning_nan():
    lp, adv, empty = torch.zeros(2, 3), torch.ones(2), torch.zeros(2, 3)
    with pytest.raises(ValueError, match="keeps no token"):
        grpo_loss(lp, lp, adv, empty)
    with pytest.raises(ValueError, match="keeps no token"):
        ppo_policy_loss(lp, lp, torch.ones(2, 3), empty)
    with pytest.raises(ValueError, match="keeps no token"):
        ppo_value_loss(lp, lp, lp, empty)


def test_grpo_gives_an_empty_completion_no_weight():
    g = torch.Generator().manual_seed(0)
    lp, old = torch.randn(3, 4, generator=g), torch.randn(3, 4, generator=g)
    adv = torch.tensor([1.0, -0.5, 2.0])
    mask = torch.ones(3, 4)
    mask[1] = 0
    loss, stats = grpo_loss(lp, old, adv, mask)
    per = grpo_token_losses(lp, old, adv)["loss"]
    assert torch.isclose(loss, (per[0].mean() + per[2].mean()) / 3)  # row 1 counts 0, as trl
    assert all(math.isfinite(v) for v in stats.values())


@pytest.mark.parametrize("loss_type", ["grpo", "bnpo", "dr_grpo"])
def test_grpo_loss_is_a_reduction_of_its_per_token_losses(loss_type):
    g = torch.Generator().manual_seed(1)
    lp = -torch.rand(4, 5, generator=g)
    old, ref = lp + 0.2 * torch.randn(4, 5, generator=g), lp + 0.2 * torch.randn(4, 5, generator=g)
    adv, mask = torch.randn(4, generator=g), torch.ones(4, 5)
    mask[0, 3:] = 0
    terms = grpo_token_losses(lp, old, adv, 0.1, ref, 0.2, 0.28)
    assert terms["loss"].shape == (4, 5)
    torch.testing.assert_close(terms["kl"], kl_estimate(lp, ref, "k3"))
    ratio = (lp - old).exp()
    A = adv[:, None]
    expected = -torch.min(ratio * A, ratio.clamp(0.8, 1.28) * A) + 0.1 * kl_estimate(lp, ref, "k3")
    torch.testing.assert_close(terms["loss"], expected)
    loss, _ = grpo_loss(lp, old, adv, mask, loss_type, 0.1, ref, 0.2, 0.28, 5)
    m, per = mask, terms["loss"]
    want = {"grpo": ((per * m).sum(1) / m.sum(1)).mean(), "bnpo": (per * m).sum() / m.sum(),
            "dr_grpo": (per * m).sum() / (4 * 5)}[loss_type]
    torch.testing.assert_close(loss, want)


def test_ppo_policy_loss_is_the_masked_mean_of_its_per_token_losses():
    g = torch.Generator().manual_seed(2)
    lp, old, adv = (torch.randn(2, 6, generator=g) for _ in range(3))
    mask = torch.tensor([[1.0] * 6, [1.0] * 2 + [0.0] * 4])
    per, clipped = ppo_token_losses(lp, old, adv, 0.2)
    loss, clipfrac = ppo_policy_loss(lp, old, adv, mask, 0.2)
    torch.testing.assert_close(loss, per[mask.bool()].mean())
    torch.testing.assert_close(clipfrac, clipped[mask.bool()].float().mean())


def test_grpo_token_losses_reject_per_token_advantages():
    with pytest.raises(ValueError, match="advantages must be"):
        grpo_token_losses(torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(2, 3))
