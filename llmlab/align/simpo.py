"""SimPO: a reference-free preference loss on length-normalised log-probabilities, with a margin.

L = -log sigmoid(beta (avg log pi(y_w) - avg log pi(y_l)) - gamma). Meng et al. 2024, "SimPO:
Simple Preference Optimization with a Reference-Free Reward", arXiv:2405.14734 (eq. 6).
Taught in chapter 06 (solutions/06_align).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def simpo_loss(avg_chosen_logps: torch.Tensor, avg_rejected_logps: torch.Tensor, beta: float = 2.0,
               gamma: float = 0.5, label_smoothing: float = 0.0) -> torch.Tensor:
    """Per-pair SimPO losses. Inputs: mean per-token log-probs of each response, (batch,)."""
    h = beta * (avg_chosen_logps - avg_rejected_logps) - gamma
    return -(1 - label_smoothing) * F.logsigmoid(h) - label_smoothing * F.logsigmoid(-h)
