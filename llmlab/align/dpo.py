"""Direct Preference Optimization (DPO), with conservative DPO (label smoothing) and robust DPO.

The KL-regularised RLHF objective max_pi E[r] - beta KL(pi || pi_ref) has the optimal policy
pi*(y|x) = pi_ref(y|x) exp(r(x,y)/beta) / Z(x), so r = beta log(pi*/pi_ref) + beta log Z(x). In the
Bradley–Terry likelihood Z cancels, leaving a loss on log-probabilities alone:

    L = -log sigmoid(beta [(log pi(y_w) - log pi_ref(y_w)) - (log pi(y_l) - log pi_ref(y_l))]).

- Rafailov et al. 2023, "Direct Preference Optimization: Your Language Model is Secretly a
  Reward Model", arXiv:2305.18290 (eq. 7).
- cDPO: Mitchell 2023, "A note on DPO with noisy preferences & relationship to IPO"
  (labels flipped with probability eps: -(1-eps) log s(beta h) - eps log s(-beta h)).
- Robust DPO: Chowdhury et al. 2024, "Provably Robust DPO", arXiv:2403.00409 (the unbiased
  version, ``loss_type="robust"``, as ``trl``'s DPOTrainer).

Log-probabilities are sums over the response tokens. Taught in chapter 06 (solutions/06_align).
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F

from llmlab.align.logprobs import get_response_log_probs, masked_normalize, prompt_response_batch


def dpo_loss(
    policy_chosen_logps: torch.Tensor, policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor, ref_rejected_logps: torch.Tensor,
    beta: float = 0.1, label_smoothing: float = 0.0, loss_type: str = "sigmoid",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-pair DPO losses and implicit rewards.

    All inputs (batch,) sequence log-probs -> (losses (batch,), chosen_rewards (batch,),
    rejected_rewards (batch,)) with reward = beta * (log pi - log pi_ref), detached.
    ``loss_type``: ``"sigmoid"`` (DPO; cDPO when ``label_smoothing`` > 0) or ``"robust"`` (rDPO).
    """
    if loss_type not in ("sigmoid", "robust"):
        raise ValueError(f"loss_type must be 'sigmoid' or 'robust', got {loss_type!r}")
    if not 0.0 <= label_smoothing < 0.5:
        raise ValueError(f"label_smoothing must be in [0, 0.5), got {label_smoothing}")
    chosen = policy_chosen_logps - ref_chosen_logps
    rejected = policy_rejected_logps - ref_rejected_logps
    h = beta * (chosen - rejected)
    if loss_type == "sigmoid":
        losses = -(1 - label_smoothing) * F.logsigmoid(h) - label_smoothing * F.logsigmoid(-h)
    else:  # unbiased under label noise: the flipped term enters with a minus sign
        losses = (-(1 - label_smoothing) * F.logsigmoid(h) + label_smoothing * F.logsigmoid(-h)) / (
            1 - 2 * label_smoothing)
    return losses, beta * chosen.detach(), beta * rejected.detach()


def preference_log_probs(model: torch.nn.Module, pairs: list[tuple[list[int], list[int], list[int]]],
                         pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed response log-probs of (prompt, chosen, rejected) token lists -> (chosen (B,), rejected (B,))."""
    prompts = [p for p, _, _ in pairs]
    batch = prompt_response_batch(prompts + prompts, [c for _, c, _ in pairs] + [r for _, _, r in pairs],
                                  pad_id)
    lp = get_response_log_probs(model, batch["input_ids"], batch["labels"])["log_probs"]
    seq = masked_normalize(lp, batch["response_mask"], dim=-1)
    return seq[: len(pairs)], seq[len(pairs):]


def train_dpo(policy: torch.nn.Module, pairs: list, eval_pairs: list, pad_id: int, steps: int = 20,
              beta: float = 0.1, lr: float = 1e-4, batch_size: int = 8, label_smoothing: float = 0.0,
              seed: int = 0, progress=None) -> list[dict[str, float]]:
    """DPO against a frozen copy of ``policy``; logs loss, implicit reward margin and win rate
    (fraction of held-out pairs whose chosen implicit reward beats the rejected, strictly) before
    training and after each step (``steps + 1`` entries)."""
    ref = copy.deepcopy(policy).eval().requires_grad_(False)
    with torch.no_grad():
        ref_c, ref_r = preference_log_probs(ref, pairs, pad_id)
        ref_ec, ref_er = preference_log_probs(ref, eval_pairs, pad_id)
    opt = torch.optim.AdamW(policy.parameters(), lr=lr, weight_decay=0.0)
    g = torch.Generator().manual_seed(seed)
    history = []

    def log(loss: float, train_margin: float) -> None:
        with torch.no_grad():
            ec, er = preference_log_probs(policy, eval_pairs, pad_id)
            margin = beta * ((ec - ref_ec) - (er - ref_er))
        history.append({"loss": loss, "train_margin": train_margin, "eval_margin": float(margin.mean()),
                        "win_rate": float((margin > 0).float().mean())})

    log(math.log(2), 0.0)  # before training: policy = reference, every margin 0
    for _ in progress(range(steps)) if progress else range(steps):
        i = torch.randint(len(pairs), (batch_size,), generator=g)
        pc, pr = preference_log_probs(policy, [pairs[j] for j in i.tolist()], pad_id)
        losses, rc, rr = dpo_loss(pc, pr, ref_c[i], ref_r[i], beta, label_smoothing)
        opt.zero_grad()
        losses.mean().backward()
        opt.step()
        log(float(losses.detach().mean()), float((rc - rr).mean()))
    return history
