"""Monte-Carlo estimators of KL(pi || pi_ref) from samples of pi, per token.

With log r = log pi_ref(y) - log pi(y) and y ~ pi:  k1 = -log r (unbiased, high variance, can be
negative), k2 = (log r)^2 / 2 (biased, low variance), k3 = (r - 1) - log r (unbiased, always
>= 0, low variance; GRPO's KL term). Schulman 2020, "Approximating KL Divergence",
http://joschu.net/blog/kl-approx.html; k3 in GRPO: Shao et al. 2024, arXiv:2402.03300 (eq. 4).
Taught in chapter 06 (solutions/06_align).
"""

from __future__ import annotations

import torch


def kl_estimate(log_probs: torch.Tensor, ref_log_probs: torch.Tensor, kind: str = "k3") -> torch.Tensor:
    """Per-token estimate of KL(pi || pi_ref). log_probs (of pi, the sampler), ref_log_probs: same shape."""
    log_r = ref_log_probs - log_probs
    if kind == "k1":
        return -log_r
    if kind == "k2":
        return 0.5 * log_r**2
    if kind == "k3":
        return torch.exp(log_r) - log_r - 1
    raise ValueError(f"kind must be 'k1', 'k2' or 'k3', got {kind!r}")
