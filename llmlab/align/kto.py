"""KTO: preference learning from unpaired good/bad labels with a prospect-theory value function.

Desirable y: 1 - sigmoid(beta (r - z0)); undesirable y: 1 - sigmoid(beta (z0 - r)), where
r = log pi(y|x) - log pi_ref(y|x) and the reference point z0 is a (clamped >= 0) estimate of
KL(pi || pi_ref) from mismatched (x, y') pairs, with no gradient. Ethayarajh et al. 2024,
"KTO: Model Alignment as Prospect Theoretic Optimization", arXiv:2402.01306 (eq. 7).
Taught in chapter 06 (solutions/06_align).
"""

from __future__ import annotations

import torch


def kto_reference_point(policy_kl_logps: torch.Tensor, ref_kl_logps: torch.Tensor) -> torch.Tensor:
    """z0 = max(0, mean(log pi(y'|x) - log pi_ref(y'|x))) over mismatched pairs, detached."""
    return (policy_kl_logps - ref_kl_logps).mean().detach().clamp(min=0)


def kto_loss(policy_logps: torch.Tensor, ref_logps: torch.Tensor, desirable: torch.Tensor,
             kl: torch.Tensor, beta: float = 0.1, desirable_weight: float = 1.0,
             undesirable_weight: float = 1.0) -> torch.Tensor:
    """Per-example KTO losses (batch,), in input order. desirable: (batch,) bool."""
    r = policy_logps - ref_logps
    good = desirable_weight * (1 - torch.sigmoid(beta * (r - kl)))
    bad = undesirable_weight * (1 - torch.sigmoid(beta * (kl - r)))
    return torch.where(desirable.bool(), good, bad)
