"""REINFORCE: the score-function policy gradient, with a baseline.

grad E_{y~pi}[R(y)] = E[(R(y) - b) grad log pi(y)] for any b that does not depend on y; a good b
(the mean reward) lowers the variance without adding bias. Williams 1992, "Simple statistical
gradient-following algorithms for connectionist reinforcement learning", Machine Learning 8.
Everything after it in this package (PPO, GRPO) is this gradient with better advantage
estimates and a trust region. Taught in chapter 06 (solutions/06_align).
"""

from __future__ import annotations

import torch


def reinforce_loss(log_probs: torch.Tensor, rewards: torch.Tensor,
                   baseline: torch.Tensor | float = 0.0) -> torch.Tensor:
    """-mean((R - b) * log pi(y)): its gradient is the REINFORCE estimate (negated, to minimise).

    log_probs: (batch,) log pi of each sampled action/sequence (with grad); rewards: (batch,);
    baseline: scalar or (batch,), treated as a constant.
    """
    if log_probs.shape != rewards.shape:
        raise ValueError(f"log_probs {tuple(log_probs.shape)} and rewards {tuple(rewards.shape)} differ")
    baseline = torch.as_tensor(baseline, dtype=rewards.dtype)
    return -((rewards - baseline).detach() * log_probs).mean()
