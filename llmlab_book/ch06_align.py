"""Chapter 06 (solutions/06_align): the catalogue of plausible wrong answers.

Each variant is one slip a learner makes in an otherwise right answer, written as the answer
cell would be (see :mod:`llmlab_book.catalogue` for the format); the chapter's checks name them
and ``tests/platform/test_catalogue.py`` grades every one. ``completion_log_probs``,
``grpo_objective`` and ``group_rollout`` are the right answers of exercises 6.9–6.11: the
capstone's variants call them, and in a learner's notebook they are the learner's own.
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F

import llmlab.align as al
from llmlab.model import SamplingParams, generate
from llmlab_book.catalogue import Catalogue, Mistake

# ------------------------------------------------------------------ 6.1 assistant-only labels


def sft_labels_mask_at_t(ids, assistant_mask):
    """The label at t kept when token t (not t + 1) is the assistant's."""
    return [ids[t + 1] if assistant_mask[t] else -100 for t in range(len(ids) - 1)] + [-100]


def sft_labels_unshifted(ids, assistant_mask):
    """Labels not shifted: the token itself where it is the assistant's."""
    return [i if m else -100 for i, m in zip(ids, assistant_mask)]


# ------------------------------------------------------------------ 6.2 the packed-documents mask


def document_mask_not_causal(doc_ids):
    """Same document only: a token also sees the later tokens of its document."""
    return (doc_ids[:, :, None] == doc_ids[:, None, :])[:, None]


def document_mask_causal_only(doc_ids):
    """The plain causal mask: documents attend to the ones packed before them."""
    T = doc_ids.shape[1]
    causal = torch.ones(T, T, dtype=torch.bool).tril()
    return causal.expand(doc_ids.shape[0], 1, T, T).clone()


# ------------------------------------------------------------------ 6.3 predict: the BT loss


def predict_bt_in_bits():
    """The two losses in bits (log base 2), not nats."""
    return 1.0, math.log2(1 + math.exp(-2))


def predict_bt_margin_flipped():
    """The margin taken as rejected minus chosen: -log sigmoid(-2) for the second."""
    return math.log(2), math.log(1 + math.exp(2))


# ------------------------------------------------------------------ 6.4 the Bradley–Terry loss


def bt_loss_log_of_sigmoid(r_chosen, r_rejected):
    """-log(sigmoid(d)) in two steps: sigmoid underflows to 0 for a huge wrong margin (inf)."""
    return -torch.log(torch.sigmoid(r_chosen - r_rejected)).mean()


def bt_loss_summed(r_chosen, r_rejected):
    """The batch's losses summed instead of averaged."""
    return F.softplus(r_rejected - r_chosen).sum()


# ------------------------------------------------------------------ 6.5 GAE


def _gae(rewards, values, mask, gamma, lam, mask_values=True):
    if not rewards.shape == values.shape == mask.shape:
        raise ValueError("rewards, values and mask must all be (batch, T)")
    if mask_values:
        values = values * mask
    rewards = rewards * mask
    T = rewards.shape[1]
    adv = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(T)):
        next_v = values[:, t + 1] if t + 1 < T else torch.zeros_like(running)
        running = rewards[:, t] + gamma * next_v - values[:, t] + gamma * lam * running
        adv[:, t] = running
    return adv, adv + values


def gae_discount_gamma_only(rewards, values, mask, gamma=1.0, lam=0.95):
    """The recursion discounted by gamma alone: A_t = delta_t + gamma A_{t+1} (lambda forgotten)."""
    if not rewards.shape == values.shape == mask.shape:
        raise ValueError("rewards, values and mask must all be (batch, T)")
    values, rewards = values * mask, rewards * mask
    T = rewards.shape[1]
    adv = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(T)):
        next_v = values[:, t + 1] if t + 1 < T else torch.zeros_like(running)
        running = rewards[:, t] + gamma * next_v - values[:, t] + gamma * running
        adv[:, t] = running
    return adv, adv + values


def gae_values_past_the_end(rewards, values, mask, gamma=1.0, lam=0.95):
    """The values after a row's end not cleared: the episode bootstraps from padding."""
    return _gae(rewards, values, mask, gamma, lam, mask_values=False)


# ------------------------------------------------------------------ 6.6 the PPO clipped loss


def ppo_clip_loss_optimistic(log_probs, old_log_probs, advantages, mask, clip=0.2):
    """The min of the two negated terms (the optimistic bound) instead of the max."""
    ratio = torch.exp(log_probs - old_log_probs)
    per_token = torch.min(-advantages * ratio, -advantages * ratio.clamp(1 - clip, 1 + clip))
    return (per_token * mask).sum() / mask.sum()


def ppo_clip_loss_mean_over_padding(log_probs, old_log_probs, advantages, mask, clip=0.2):
    """Masked tokens zeroed but counted: the sum divided by every position, not the kept ones."""
    ratio = torch.exp(log_probs - old_log_probs)
    per_token = torch.max(-advantages * ratio, -advantages * ratio.clamp(1 - clip, 1 + clip))
    return (per_token * mask).mean()


# ------------------------------------------------------------------ 6.7 predict: what beta does


def predict_beta_times_beta():
    """exp(r * beta) instead of exp(r / beta): the two betas swapped."""
    return 1 / (1 + math.exp(-0.5)), 1 / (1 + math.exp(-2))


def predict_beta_unnormalised():
    """pi_ref * exp(r / beta) without dividing by Z."""
    return 0.5 * math.exp(2), 0.5 * math.exp(0.5)


# ------------------------------------------------------------------ 6.8 the DPO loss


def dpo_without_beta(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta=0.1):
    """The log-ratio margin not scaled by beta."""
    h = (policy_chosen - ref_chosen) - (policy_rejected - ref_rejected)
    return -F.logsigmoid(h).mean()


def dpo_ratios_swapped(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta=0.1):
    """Rejected minus chosen: the loss pushes toward the rejected answer."""
    h = beta * ((policy_rejected - ref_rejected) - (policy_chosen - ref_chosen))
    return -F.logsigmoid(h).mean()


# ------------------------------------------------------------------ 6.9 log-probs of a completion


def completion_log_probs(model, ids, prompt_len, mask):
    """The right answer (the capstone's variants use it)."""
    if not 1 <= prompt_len < ids.shape[1]:
        raise ValueError(f"prompt_len must be in [1, {ids.shape[1] - 1}], got {prompt_len}")
    if tuple(mask.shape) != (ids.shape[0], ids.shape[1] - prompt_len):
        raise ValueError(f"mask must be (batch, C), got {tuple(mask.shape)}")
    logits = model(ids[:, :-1])[:, prompt_len - 1:]
    taken = torch.log_softmax(logits.float(), dim=-1).gather(-1, ids[:, prompt_len:, None]).squeeze(-1)
    return torch.where(mask.bool(), taken, torch.zeros_like(taken))


def completion_log_probs_same_position(model, ids, prompt_len, mask):
    """Each token scored by the logits at its own position (they predict the next token)."""
    if not 1 <= prompt_len < ids.shape[1]:
        raise ValueError(f"prompt_len must be in [1, {ids.shape[1] - 1}], got {prompt_len}")
    if tuple(mask.shape) != (ids.shape[0], ids.shape[1] - prompt_len):
        raise ValueError(f"mask must be (batch, C), got {tuple(mask.shape)}")
    logits = model(ids)[:, prompt_len:]
    taken = torch.log_softmax(logits.float(), dim=-1).gather(-1, ids[:, prompt_len:, None]).squeeze(-1)
    return torch.where(mask.bool(), taken, torch.zeros_like(taken))


def completion_log_probs_unmasked(model, ids, prompt_len, mask):
    """The mask ignored: tokens after a completion's end keep their log-probs."""
    if not 1 <= prompt_len < ids.shape[1]:
        raise ValueError(f"prompt_len must be in [1, {ids.shape[1] - 1}], got {prompt_len}")
    if tuple(mask.shape) != (ids.shape[0], ids.shape[1] - prompt_len):
        raise ValueError(f"mask must be (batch, C), got {tuple(mask.shape)}")
    logits = model(ids[:, :-1])[:, prompt_len - 1:]
    return torch.log_softmax(logits.float(), dim=-1).gather(-1, ids[:, prompt_len:, None]).squeeze(-1)


# ------------------------------------------------------------------ 6.10 the GRPO loss


def _grpo(log_probs, old_log_probs, ref_log_probs, rewards, mask, group_size, beta, eps,
          unbiased=True, token_mean=False, kl="k3"):
    if rewards.dim() != 1 or rewards.numel() % group_size:
        raise ValueError(f"rewards must be 1-D with a multiple of group_size={group_size} entries")
    if not bool(mask.bool().any()):
        raise ValueError("mask keeps no token")
    g = rewards.view(-1, group_size)
    adv = ((g - g.mean(1, keepdim=True)) / (g.std(1, keepdim=True, unbiased=unbiased) + 1e-4)).reshape(-1, 1)
    ratio = torch.exp(log_probs - old_log_probs)
    per_token = -torch.min(ratio * adv, ratio.clamp(1 - eps, 1 + eps) * adv)
    log_rho = ref_log_probs - log_probs
    per_token = per_token + beta * (torch.exp(log_rho) - log_rho - 1 if kl == "k3" else -log_rho)
    if token_mean:
        return (per_token * mask).sum() / mask.sum()
    return ((per_token * mask).sum(-1) / mask.sum(-1).clamp(min=1)).mean()


def grpo_objective(log_probs, old_log_probs, ref_log_probs, rewards, mask, group_size, beta=0.04, eps=0.2):
    """The right answer (the capstone's variants use it)."""
    return _grpo(log_probs, old_log_probs, ref_log_probs, rewards, mask, group_size, beta, eps)


def grpo_objective_population_std(log_probs, old_log_probs, ref_log_probs, rewards, mask, group_size,
                                  beta=0.04, eps=0.2):
    """Advantages scaled by the population std (divides by G) instead of the unbiased one."""
    return _grpo(log_probs, old_log_probs, ref_log_probs, rewards, mask, group_size, beta, eps,
                 unbiased=False)


def grpo_objective_token_mean(log_probs, old_log_probs, ref_log_probs, rewards, mask, group_size,
                              beta=0.04, eps=0.2):
    """One token mean over the whole batch (DAPO's reduction) instead of per-sequence means."""
    return _grpo(log_probs, old_log_probs, ref_log_probs, rewards, mask, group_size, beta, eps,
                 token_mean=True)


def grpo_objective_k1(log_probs, old_log_probs, ref_log_probs, rewards, mask, group_size, beta=0.04, eps=0.2):
    """The KL term estimated with k1 (log pi - log pi_ref) instead of k3."""
    return _grpo(log_probs, old_log_probs, ref_log_probs, rewards, mask, group_size, beta, eps, kl="k1")


# ------------------------------------------------------------------ 6.11 group rollouts


def _rollout(model, prompts, params, generator, keep_eos=True):
    eos = params.eos_token_id
    was_training = model.training
    model.eval()
    ids = generate(model, prompts, params, generator=generator, pad_token_id=0 if eos is None else eos)
    model.train(was_training)
    P, C = prompts.shape[1], params.max_new_tokens
    if ids.shape[1] < P + C:
        ids = torch.cat([ids, torch.full((ids.shape[0], P + C - ids.shape[1]), eos)], 1)
    completion = ids[:, P:]
    if eos is None:
        return ids, torch.ones(completion.shape)
    is_eos = (completion == eos).int()
    after = is_eos.cumsum(1) - (is_eos if keep_eos else 0)
    return ids, (after == 0).float()


def _check_rollout_args(prompt_ids, group_size):
    if prompt_ids.dim() != 2:
        raise ValueError(f"prompt_ids must be (n, P), got shape {tuple(prompt_ids.shape)}")
    if group_size < 1:
        raise ValueError(f"group_size must be >= 1, got {group_size}")


def group_rollout(model, prompt_ids, group_size, params, generator=None):
    """The right answer (the capstone's variants use it)."""
    _check_rollout_args(prompt_ids, group_size)
    return _rollout(model, prompt_ids.repeat_interleave(group_size, dim=0), params, generator)


def group_rollout_tiled(model, prompt_ids, group_size, params, generator=None):
    """The batch tiled with .repeat: a group's rows hold different prompts."""
    _check_rollout_args(prompt_ids, group_size)
    return _rollout(model, prompt_ids.repeat(group_size, 1), params, generator)


def group_rollout_mask_without_eos(model, prompt_ids, group_size, params, generator=None):
    """The mask stops before the end token: the model is never taught to stop."""
    _check_rollout_args(prompt_ids, group_size)
    return _rollout(model, prompt_ids.repeat_interleave(group_size, dim=0), params, generator, keep_eos=False)


# ------------------------------------------------------------------ 6.12 capstone: the GRPO trainer


class _GRPOTrainerWith:
    """The right trainer, with one slip switched on by a subclass."""

    OLD_EACH_UPDATE = False  # the sampler's log-probs recomputed at every update
    REF_IS_POLICY = False    # the reference is the live policy, not a frozen copy
    FRESH_OPTIMIZER = False  # a new AdamW (fresh moments) at every step

    def __init__(self, policy, config, eos_token_id=None, seed=0):
        if config.loss_type != "grpo" or not config.scale_rewards or config.eps_high is not None:
            raise ValueError("this trainer implements loss_type='grpo' with std scaling and one clip range")
        if config.group_size < 2 or config.num_iterations < 1:
            raise ValueError("need group_size >= 2 and num_iterations >= 1")
        self.policy, self.cfg = policy, config
        self.ref = policy if self.REF_IS_POLICY else copy.deepcopy(policy).eval().requires_grad_(False)
        self.opt = torch.optim.AdamW(policy.parameters(), lr=config.lr, weight_decay=0.0)
        self.gen = torch.Generator().manual_seed(seed)
        self.params = SamplingParams(max_new_tokens=config.max_new_tokens, temperature=config.temperature,
                                     eos_token_id=eos_token_id)

    def step(self, prompt_ids, reward_fn):
        c, P = self.cfg, prompt_ids.shape[1]
        if self.FRESH_OPTIMIZER:
            self.opt = torch.optim.AdamW(self.policy.parameters(), lr=c.lr, weight_decay=0.0)
        ids, mask = group_rollout(self.policy, prompt_ids, c.group_size, self.params, self.gen)
        with torch.no_grad():
            rewards = reward_fn(al.Rollout(ids, P, mask)).float()
            if tuple(rewards.shape) != (ids.shape[0],):
                raise ValueError("reward_fn must return (n * group_size,) rewards")
            old_lp = completion_log_probs(self.policy, ids, P, mask)
            ref_lp = completion_log_probs(self.ref, ids, P, mask)
        for _ in range(c.num_iterations):
            lp = completion_log_probs(self.policy, ids, P, mask)
            old = lp.detach() if self.OLD_EACH_UPDATE else old_lp
            loss = grpo_objective(lp, old, ref_lp, rewards, mask, c.group_size, c.beta, c.eps_low)
            self.opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.policy.parameters(), 1.0)
            self.opt.step()
        log_rho = ref_lp - lp.detach()
        kl = ((torch.exp(log_rho) - log_rho - 1) * mask).sum() / mask.sum()
        return {"reward": float(rewards.mean()), "loss": float(loss.detach()), "kl": float(kl)}


class GRPOTrainerOldEachUpdate(_GRPOTrainerWith):
    """The ratio taken against the current policy at every update: always 1, nothing clips."""

    OLD_EACH_UPDATE = True


class GRPOTrainerLiveReference(_GRPOTrainerWith):
    """The reference is the policy itself, not a frozen copy: the KL to it is always 0."""

    REF_IS_POLICY = True


class GRPOTrainerFreshOptimizer(_GRPOTrainerWith):
    """A new optimiser at every step: AdamW's moments start from zero each time."""

    FRESH_OPTIMIZER = True


CATALOGUE = Catalogue({
    "sft_labels": [
        Mistake("the label kept when token t, not t + 1, is the assistant's", sft_labels_mask_at_t),
        Mistake("labels not shifted by one: the token itself instead of the next one", sft_labels_unshifted),
    ],
    "document_mask": [
        Mistake("same-document only, without the causal part: tokens see their document's future",
                document_mask_not_causal),
        Mistake("the plain causal mask: documents attend to the ones packed before them",
                document_mask_causal_only),
    ],
    "predict_bt": [
        Mistake("the losses in bits (log base 2), not nats", predict_bt_in_bits),
        Mistake("the margin taken as rejected minus chosen", predict_bt_margin_flipped),
    ],
    "bt_loss": [
        Mistake("log of sigmoid in two steps: sigmoid underflows to 0 for a huge wrong margin",
                bt_loss_log_of_sigmoid),
        Mistake("the losses summed over the batch instead of averaged", bt_loss_summed),
    ],
    "gae_advantages": [
        Mistake("the recursion discounted by gamma alone, lambda forgotten", gae_discount_gamma_only),
        Mistake("values after a row's end not cleared: the episode bootstraps from padding",
                gae_values_past_the_end),
    ],
    "ppo_clip_loss": [
        Mistake("the min of the two negated terms (optimistic) instead of the max (pessimistic)",
                ppo_clip_loss_optimistic),
        Mistake("the sum divided by every position, masked ones included", ppo_clip_loss_mean_over_padding),
    ],
    "predict_beta": [
        Mistake("exp(r * beta) instead of exp(r / beta)", predict_beta_times_beta),
        Mistake("pi_ref * exp(r / beta) without normalising by Z", predict_beta_unnormalised),
    ],
    "dpo": [
        Mistake("the log-ratio margin not multiplied by beta", dpo_without_beta),
        Mistake("chosen and rejected swapped: rejected log-ratio minus chosen", dpo_ratios_swapped),
    ],
    "completion_log_probs": [
        Mistake("each token scored by the logits at its own position (they predict the next token)",
                completion_log_probs_same_position),
        Mistake("the mask ignored: tokens after a completion's end keep their log-probs",
                completion_log_probs_unmasked),
    ],
    "grpo_objective": [
        Mistake("advantages scaled by the population std instead of the unbiased one",
                grpo_objective_population_std),
        Mistake("one token mean over the whole batch instead of per-sequence means",
                grpo_objective_token_mean),
        Mistake("the KL term estimated with k1 instead of k3", grpo_objective_k1),
    ],
    "group_rollout": [
        Mistake("the batch tiled with .repeat: a group's rows hold different prompts", group_rollout_tiled),
        Mistake("the mask stops before the end token, which is then never trained",
                group_rollout_mask_without_eos),
    ],
    "grpo_trainer": [
        Mistake("the ratio taken against the current policy at every update (the sampler's log-probs "
                "recomputed), so it is always 1", GRPOTrainerOldEachUpdate),
        Mistake("the reference is the live policy, not a copy frozen at construction",
                GRPOTrainerLiveReference),
        Mistake("a new optimiser at every step: AdamW's moments restart from zero",
                GRPOTrainerFreshOptimizer),
    ],
})
