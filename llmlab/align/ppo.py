"""PPO for language models: rollouts, a per-token KL penalty to a frozen reference, a value
model, GAE, advantage whitening, the clipped policy and value losses, an adaptive KL controller.

- Schulman et al. 2017, "Proximal Policy Optimization Algorithms", arXiv:1707.06347
  (clipped surrogate, eq. 7).
- Schulman et al. 2015, "High-Dimensional Continuous Control Using Generalized Advantage
  Estimation", arXiv:1506.02438 (GAE(gamma, lambda), eq. 16).
- Ziegler et al. 2019, "Fine-Tuning Language Models from Human Preferences", arXiv:1909.08593
  (reward = score - beta * KL per token, and the adaptive KL controller, section 2.2).
- Ouyang et al. 2022 (InstructGPT), arXiv:2203.02155: the RLHF recipe these pieces make.

The loss terms follow the conventions of ``trl``'s PPO trainer (token-level masked means, value
loss 0.5 * max of clipped/unclipped squared errors). Taught in chapter 06 (solutions/06_align).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from llmlab.align.logprobs import masked_mean, masked_whiten, require_tokens
from llmlab.align.reward_model import ScalarHeadModel
from llmlab.align.rollout import Rollout, completion_log_probs, sample_rollout
from llmlab.utils import reject_unknown_keys


def kl_penalized_rewards(scores: torch.Tensor, log_probs: torch.Tensor, ref_log_probs: torch.Tensor,
                         mask: torch.Tensor, kl_coef: float) -> torch.Tensor:
    """Per-token rewards r_t = -kl_coef * (log pi - log pi_ref), plus the sequence score on the last
    completion token. scores: (batch,); the rest (batch, C) -> (batch, C)."""
    rewards = -kl_coef * (log_probs - ref_log_probs) * mask
    last = (mask.sum(1).long() - 1).clamp(min=0)  # index of the last real completion token
    return rewards.scatter_add(1, last[:, None], scores[:, None].to(rewards.dtype))


def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0,
        lam: float = 0.95) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalized advantage estimation, backwards over time.

    delta_t = r_t + gamma V_{t+1} - V_t,  A_t = delta_t + gamma lam A_{t+1}; V and r are 0 after the
    last real token, so the episode ends there. rewards, values, mask: (batch, C) ->
    (advantages, returns = advantages + values), both (batch, C).
    """
    if not rewards.shape == values.shape == mask.shape:
        raise ValueError(f"rewards {tuple(rewards.shape)}, values {tuple(values.shape)}, "
                         f"mask {tuple(mask.shape)} must match")
    values, rewards = values * mask, rewards * mask
    T = rewards.shape[1]
    adv = torch.zeros_like(rewards)
    last = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(T)):
        next_v = values[:, t + 1] if t + 1 < T else torch.zeros_like(last)
        delta = rewards[:, t] + gamma * next_v - values[:, t]
        last = delta + gamma * lam * last
        adv[:, t] = last
    return adv, adv + values


def ppo_policy_loss(log_probs: torch.Tensor, old_log_probs: torch.Tensor, advantages: torch.Tensor,
                    mask: torch.Tensor, clip_range: float = 0.2) -> tuple[torch.Tensor, torch.Tensor]:
    """Clipped surrogate: masked mean of max(-A ratio, -A clip(ratio, 1-eps, 1+eps)).

    All (batch, C) -> (loss scalar, clip fraction scalar); the per-token losses are
    :func:`ppo_token_losses`. A mask that keeps no token raises ``ValueError``.
    """
    require_tokens(mask)
    per_token, clipped = ppo_token_losses(log_probs, old_log_probs, advantages, clip_range)
    return masked_mean(per_token, mask), masked_mean(clipped.float(), mask)


def ppo_token_losses(log_probs: torch.Tensor, old_log_probs: torch.Tensor, advantages: torch.Tensor,
                     clip_range: float = 0.2) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token clipped surrogate max(-A ratio, -A clip(ratio, 1-eps, 1+eps)), before any
    reduction. All (batch, C) -> (losses (batch, C), clipped (batch, C) bool)."""
    ratio = torch.exp(log_probs - old_log_probs)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip_range, 1.0 + clip_range)
    return torch.max(unclipped, clipped), clipped > unclipped


def ppo_value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor,
                   mask: torch.Tensor, clip_range_value: float = 0.2) -> tuple[torch.Tensor, torch.Tensor]:
    """0.5 * masked mean of max((V - R)^2, (clip(V, V_old +- eps) - R)^2). -> (loss, clip fraction)."""
    require_tokens(mask)
    v_clipped = old_values + torch.clamp(values - old_values, -clip_range_value, clip_range_value)
    l1, l2 = (values - returns) ** 2, (v_clipped - returns) ** 2
    return 0.5 * masked_mean(torch.max(l1, l2), mask), masked_mean((l2 > l1).float(), mask)


class AdaptiveKLController:
    """beta <- beta * (1 + clip(KL/target - 1, -0.2, 0.2) * n_steps / horizon) (Ziegler et al. 2019)."""

    def __init__(self, init_kl_coef: float, target: float, horizon: int) -> None:
        if target <= 0 or horizon <= 0:
            raise ValueError(f"target and horizon must be > 0, got {target}, {horizon}")
        self.value, self.target, self.horizon = init_kl_coef, target, horizon

    def update(self, current_kl: float, n_steps: int) -> float:
        error = min(max(current_kl / self.target - 1.0, -0.2), 0.2)
        self.value *= 1.0 + error * n_steps / self.horizon
        return self.value


@reject_unknown_keys
@dataclass
class PPOConfig:
    """Hyper-parameters of ``PPOTrainer`` (defaults after ``trl``'s PPO trainer where it has one)."""

    max_new_tokens: int = 12
    temperature: float = 1.0
    lr: float = 1e-4
    ppo_epochs: int = 2
    minibatches: int = 2
    clip_range: float = 0.2
    clip_range_value: float = 0.2
    vf_coef: float = 0.1
    gamma: float = 1.0
    lam: float = 0.95
    init_kl_coef: float = 0.05
    adaptive_kl: bool = False
    kl_target: float = 6.0
    kl_horizon: int = 10000
    whiten_advantages: bool = True


class PPOTrainer:
    """PPO on a policy GPT, with a frozen reference copy and a value model (trunk copy + head).

    ``step(prompt_ids, reward_fn)`` samples one rollout per prompt, scores it with
    ``reward_fn(rollout) -> (batch,)``, and runs ``ppo_epochs`` x ``minibatches`` updates.
    """

    def __init__(self, policy: nn.Module, config: PPOConfig, eos_token_id: int | None = None,
                 value_model: ScalarHeadModel | None = None, seed: int = 0) -> None:
        self.policy, self.cfg, self.eos_token_id = policy, config, eos_token_id
        self.ref = copy.deepcopy(policy).eval().requires_grad_(False)
        self.value = value_model if value_model is not None else ScalarHeadModel(policy)
        params = list(policy.parameters()) + list(self.value.parameters())
        self.opt = torch.optim.AdamW(params, lr=config.lr, weight_decay=0.0)
        self.kl = AdaptiveKLController(config.init_kl_coef, config.kl_target, config.kl_horizon)
        self.gen = torch.Generator().manual_seed(seed)

    def _values(self, ro: Rollout) -> torch.Tensor:
        return self.value(ro.ids[:, :-1])[:, ro.prompt_len - 1:]  # (batch, C), V of each prefix

    def step(self, prompt_ids: torch.Tensor, reward_fn: Callable[[Rollout], torch.Tensor]) -> dict:
        c = self.cfg
        ro = sample_rollout(self.policy, prompt_ids, generator=self.gen, max_new_tokens=c.max_new_tokens,
                            temperature=c.temperature, eos_token_id=self.eos_token_id)
        mask = ro.mask
        with torch.no_grad():
            scores = reward_fn(ro).float()
            old_lp = completion_log_probs(self.policy, ro)
            ref_lp = completion_log_probs(self.ref, ro)
            old_v = self._values(ro)
            rewards = kl_penalized_rewards(scores, old_lp, ref_lp, mask, self.kl.value)
            adv, returns = gae(rewards, old_v, mask, c.gamma, c.lam)
            if c.whiten_advantages:
                adv = masked_whiten(adv, mask)
        kl = float(((old_lp - ref_lp) * mask).sum(1).mean())  # sequence KL estimate (k1)
        stats = {"score": float(scores.mean()), "kl": kl, "kl_coef": self.kl.value}
        B = prompt_ids.shape[0]
        mb = max(B // c.minibatches, 1)
        for _ in range(c.ppo_epochs):
            order = torch.randperm(B, generator=self.gen)
            for s in range(0, B, mb):
                i = order[s:s + mb]
                sub = Rollout(ro.ids[i], ro.prompt_len, mask[i])
                lp = completion_log_probs(self.policy, sub)
                pg, clipfrac = ppo_policy_loss(lp, old_lp[i], adv[i], mask[i], c.clip_range)
                vf, _ = ppo_value_loss(self._values(sub), old_v[i], returns[i], mask[i], c.clip_range_value)
                loss = pg + c.vf_coef * vf
                self.opt.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(self.policy.parameters(), 1.0)
                self.opt.step()
        if c.adaptive_kl:
            self.kl.update(kl, B)
        stats.update(policy_loss=float(pg.detach()), value_loss=float(vf.detach()), clipfrac=float(clipfrac))
        return stats
