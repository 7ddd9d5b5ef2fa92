"""ORPO: SFT plus an odds-ratio preference term, with no reference model.

odds(y) = p(y) / (1 - p(y)) with p the length-normalised likelihood; the loss is
NLL(y_w) - lambda * log sigmoid(log odds(y_w) - log odds(y_l)). Hong et al. 2024, "ORPO: Monolithic
Preference Optimization without Reference Model", arXiv:2403.07691 (eqs. 4-7).
Taught in chapter 06 (solutions/06_align).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def log1mexp(x: torch.Tensor) -> torch.Tensor:
    """log(1 - exp(x)) for x < 0, stable at both ends (Maechler 2012)."""
    return torch.where(x > -0.6931, torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))


def orpo_odds_ratio_term(avg_chosen_logps: torch.Tensor, avg_rejected_logps: torch.Tensor,
                         lam: float = 0.1) -> torch.Tensor:
    """lambda * log sigmoid(log odds ratio), per pair (batch,) (to be subtracted from the NLL)."""
    c, r = avg_chosen_logps.float(), avg_rejected_logps.float()
    log_odds = (c - r) - (log1mexp(c) - log1mexp(r))
    return lam * F.logsigmoid(log_odds)


def orpo_loss(avg_chosen_logps: torch.Tensor, avg_rejected_logps: torch.Tensor,
              chosen_nll: torch.Tensor, lam: float = 0.1) -> torch.Tensor:
    """Scalar ORPO loss: ``chosen_nll`` (mean NLL of chosen tokens) minus the mean odds-ratio term."""
    return chosen_nll - orpo_odds_ratio_term(avg_chosen_logps, avg_rejected_logps, lam).mean()
