"""Identity Preference Optimisation (IPO): regress the log-ratio gap onto 1 / (2 tau).

L = (h - 1/(2 tau))^2 with h the difference of (per-token averaged) log-ratios of the chosen and
rejected responses; unlike DPO's sigmoid, the square does not keep pushing h to infinity on
deterministic preferences. Azar et al. 2023, "A General Theoretical Paradigm to Understand
Learning from Human Preferences", arXiv:2310.12036 (eq. 17). Averaging over response tokens
follows ``trl``. Taught in chapter 06 (solutions/06_align).
"""

from __future__ import annotations

import torch


def ipo_loss(
    policy_chosen_logps: torch.Tensor, policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor, ref_rejected_logps: torch.Tensor,
    chosen_lengths: torch.Tensor, rejected_lengths: torch.Tensor, tau: float = 0.1,
) -> torch.Tensor:
    """Per-pair IPO losses. Log-probs are sums over response tokens, (batch,); lengths (batch,)."""
    chosen = (policy_chosen_logps - ref_chosen_logps) / chosen_lengths.clamp(min=1)
    rejected = (policy_rejected_logps - ref_rejected_logps) / rejected_lengths.clamp(min=1)
    return (chosen - rejected - 1.0 / (2.0 * tau)) ** 2
