"""GRPO: PPO without a critic. Sample a group of G completions per prompt, use the group's reward
statistics as the baseline, and optimise the clipped surrogate with a k3 KL penalty.

- Shao et al. 2024, "DeepSeekMath: Pushing the Limits of Mathematical Reasoning in Open Language
  Models", arXiv:2402.03300 (GRPO, eq. 3: advantage (r - mean) / std within the group; each
  sequence's token losses averaged, then sequences averaged).
- Dr. GRPO: Liu et al. 2025, "Understanding R1-Zero-Like Training: A Critical Perspective",
  arXiv:2503.20783 (no std scaling, sum over tokens / (G * max length): no length bias).
- DAPO: Yu et al. 2025, "DAPO: An Open-Source LLM Reinforcement Learning System at Scale",
  arXiv:2503.14476 (token-level mean over the whole batch, clip-higher eps_high > eps_low).

Normalisations follow ``trl``'s GRPOTrainer (``loss_type`` grpo / bnpo / dr_grpo / dapo).
Taught in chapter 06 (solutions/06_align).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from llmlab.align.kl_estimators import kl_estimate
from llmlab.align.logprobs import masked_mean, require_tokens
from llmlab.align.rollout import Rollout, completion_log_probs, sample_rollout
from llmlab.utils import reject_unknown_keys

LOSS_TYPES = ("grpo", "bnpo", "dr_grpo", "dapo")


def group_advantages(rewards: torch.Tensor, group_size: int, scale_by_std: bool = True,
                     eps: float = 1e-4) -> torch.Tensor:
    """(r - group mean) [/ (group std + eps)], groups of ``group_size`` consecutive rows.

    rewards: (n_prompts * group_size,) -> same shape. The std is the unbiased one (torch.std).
    """
    if rewards.dim() != 1 or rewards.numel() % group_size:
        raise ValueError(f"rewards must be 1-D with a multiple of group_size={group_size} entries, "
                         f"got shape {tuple(rewards.shape)}")
    g = rewards.view(-1, group_size)
    adv = g - g.mean(1, keepdim=True)
    if scale_by_std:
        adv = adv / (g.std(1, keepdim=True) + eps)
    return adv.reshape(-1)


def grpo_token_losses(log_probs: torch.Tensor, old_log_probs: torch.Tensor, advantages: torch.Tensor,
                      beta: float = 0.0, ref_log_probs: torch.Tensor | None = None,
                      eps_low: float = 0.2, eps_high: float | None = None,
                      kl_ratio_correction: bool = False) -> dict[str, torch.Tensor]:
    """GRPO's per-token losses, before any reduction (the terms ``grpo_loss`` averages).

    log_probs/old/ref: (batch, C); advantages: (batch,). -> {"loss": (batch, C)
    -min(ratio A, clip(ratio, 1-eps_low, 1+eps_high) A) + beta * k3, "kl": (batch, C) k3 (zeros
    when beta = 0), "clipped": (batch, C) bool, where the clip removed the gradient}.
    """
    if beta and ref_log_probs is None:
        raise ValueError("beta > 0 needs ref_log_probs")
    if advantages.dim() != 1 or advantages.shape[0] != log_probs.shape[0]:
        raise ValueError(f"advantages must be (batch,) = ({log_probs.shape[0]},), "
                         f"got {tuple(advantages.shape)}")
    eps_high = eps_low if eps_high is None else eps_high
    A = advantages.unsqueeze(1)  # (batch, 1)
    ratio = torch.exp(log_probs - old_log_probs)
    per_token = -torch.min(ratio * A, torch.clamp(ratio, 1 - eps_low, 1 + eps_high) * A)
    kl = torch.zeros_like(per_token)
    if beta:
        kl = kl_estimate(log_probs, ref_log_probs, "k3")
        if kl_ratio_correction:
            kl = kl * ratio
        per_token = per_token + beta * kl
    clipped = ((ratio < 1 - eps_low) & (A < 0)) | ((ratio > 1 + eps_high) & (A > 0))
    return {"loss": per_token, "kl": kl, "clipped": clipped}


def grpo_loss(log_probs: torch.Tensor, old_log_probs: torch.Tensor, advantages: torch.Tensor,
              mask: torch.Tensor, loss_type: str = "grpo", beta: float = 0.0,
              ref_log_probs: torch.Tensor | None = None, eps_low: float = 0.2,
              eps_high: float | None = None, max_completion_length: int | None = None,
              kl_ratio_correction: bool = False) -> tuple[torch.Tensor, dict[str, float]]:
    """The GRPO-family loss. log_probs/old/ref, mask: (batch, C); advantages: (batch,).

    The per-token losses of :func:`grpo_token_losses` reduced by ``loss_type``: grpo = mean
    over sequences of each sequence's token mean (a sequence whose mask is empty counts 0, as
    ``trl``); bnpo/dapo = token mean over the batch; dr_grpo = token sum / (batch *
    max_completion_length). -> (loss, stats). A mask that keeps no token raises ``ValueError``.
    ``kl_ratio_correction`` multiplies the KL term by the ratio (importance-sampled KL when the
    samples came from pi_old, as ``trl``'s ``use_bias_correction_kl``).
    """
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"loss_type must be one of {LOSS_TYPES}, got {loss_type!r}")
    require_tokens(mask)
    terms = grpo_token_losses(log_probs, old_log_probs, advantages, beta, ref_log_probs, eps_low,
                              eps_high, kl_ratio_correction)
    per_token = terms["loss"]
    mask = mask.to(per_token.dtype)
    stats = {}
    if beta:
        stats["kl"] = float(masked_mean(terms["kl"].detach(), mask))
    if loss_type == "grpo":
        loss = ((per_token * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).mean()
    elif loss_type in ("bnpo", "dapo"):
        loss = masked_mean(per_token, mask)
    else:
        C = max_completion_length or mask.shape[1]
        loss = (per_token * mask).sum() / (per_token.shape[0] * C)
    stats["clipfrac"] = float(masked_mean(terms["clipped"].float(), mask))
    return loss, stats


@reject_unknown_keys
@dataclass
class GRPOConfig:
    """Hyper-parameters of ``GRPOTrainer``."""

    group_size: int = 8
    max_new_tokens: int = 8
    temperature: float = 1.0
    lr: float = 1e-4
    num_iterations: int = 1  # mu: policy updates per batch of rollouts
    beta: float = 0.04
    eps_low: float = 0.2
    eps_high: float | None = None
    loss_type: str = "grpo"
    scale_rewards: bool = True


class GRPOTrainer:
    """GRPO on a policy GPT with a frozen reference copy (for the KL term).

    ``step(prompt_ids, reward_fn)``: prompt_ids (n_prompts, P) are repeated ``group_size`` times,
    sampled, scored with ``reward_fn(rollout) -> (n_prompts * group_size,)``, and optimised.
    """

    def __init__(self, policy: nn.Module, config: GRPOConfig, eos_token_id: int | None = None,
                 seed: int = 0) -> None:
        self.policy, self.cfg, self.eos_token_id = policy, config, eos_token_id
        self.ref = copy.deepcopy(policy).eval().requires_grad_(False)  # also measures KL when beta = 0
        self.opt = torch.optim.AdamW(policy.parameters(), lr=config.lr, weight_decay=0.0)
        self.gen = torch.Generator().manual_seed(seed)

    def step(self, prompt_ids: torch.Tensor, reward_fn: Callable[[Rollout], torch.Tensor]) -> dict:
        c = self.cfg
        prompts = prompt_ids.repeat_interleave(c.group_size, dim=0)
        ro = sample_rollout(self.policy, prompts, generator=self.gen, max_new_tokens=c.max_new_tokens,
                            temperature=c.temperature, eos_token_id=self.eos_token_id)
        with torch.no_grad():
            rewards = reward_fn(ro).float()
            adv = group_advantages(rewards, c.group_size, c.scale_rewards)
            old_lp = completion_log_probs(self.policy, ro) if c.num_iterations > 1 else None
            ref_lp = completion_log_probs(self.ref, ro)
        for _ in range(c.num_iterations):
            lp = completion_log_probs(self.policy, ro)
            loss, stats = grpo_loss(lp, lp.detach() if old_lp is None else old_lp, adv, ro.mask,
                                    c.loss_type, c.beta, ref_lp, c.eps_low, c.eps_high, c.max_new_tokens)
            self.opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.policy.parameters(), 1.0)
            self.opt.step()
        stats["kl"] = float(masked_mean(kl_estimate(lp.detach(), ref_lp, "k3"), ro.mask))
        return {"reward": float(rewards.mean()), "loss": float(loss.detach()), **stats}
