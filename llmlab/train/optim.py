"""AdamW written out: Adam's moment estimates with decoupled weight decay.

Kingma & Ba, "Adam: A Method for Stochastic Optimization", arXiv:1412.6980 (Algorithm 1);
Loshchilov & Hutter, "Decoupled Weight Decay Regularization", arXiv:1711.05101 (Algorithm 2).
One step for a parameter p with gradient g, at step t = 1, 2, …:

    p ← p − lr·λ·p                        (decoupled decay, applied to the weights not to g)
    m ← β1·m + (1 − β1)·g                 (first moment)
    v ← β2·v + (1 − β2)·g²                (second moment)
    p ← p − lr · (m / (1 − β1^t)) / (sqrt(v / (1 − β2^t)) + ε)

This is exactly what ``torch.optim.AdamW`` computes (tested to agree step by step). ``AdamW``
runs the same arithmetic over all tensors at once (``adamw_step_foreach``), as torch does.
Taught in chapter 02 (solutions/02_gpt).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch


def adamw_step(
    p: torch.Tensor,
    grad: torch.Tensor,
    m: torch.Tensor,
    v: torch.Tensor,
    step: int,
    lr: float,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 0.01,
) -> None:
    """One AdamW update, in place on ``p``, ``m``, ``v`` (all the same shape); ``step`` >= 1."""
    if step < 1:
        raise ValueError(f"step counts from 1 (bias correction divides by 1 - beta^step), got {step}")
    beta1, beta2 = betas
    p.mul_(1 - lr * weight_decay)
    m.mul_(beta1).add_(grad, alpha=1 - beta1)
    v.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
    bias1, bias2 = 1 - beta1**step, 1 - beta2**step
    denom = (v.sqrt() / math.sqrt(bias2)).add_(eps)
    p.addcdiv_(m, denom, value=-lr / bias1)


class AdamW(torch.optim.Optimizer):
    """AdamW as a ``torch.optim.Optimizer`` (param groups, ``state_dict`` for checkpoints).

    State per parameter: ``step`` (int), ``exp_avg`` (m), ``exp_avg_sq`` (v) — the same names
    as ``torch.optim.AdamW``, so the memory it costs is visible: two fp32 tensors per weight.

    ``step_fn``: a per-tensor step ``(p, grad, m, v, step, lr, betas, eps, weight_decay) ->
    (p, m, v)`` run in place of the multi-tensor arithmetic (chapter 02 plugs in the reader's
    ``adamw_step_``); it may return new tensors, which become the weight and the moments.
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.01,
        step_fn: Callable[..., tuple[torch.Tensor, torch.Tensor, torch.Tensor]] | None = None,
    ) -> None:
        if lr < 0 or eps < 0 or not (0 <= betas[0] < 1 and 0 <= betas[1] < 1):
            raise ValueError(f"invalid AdamW hyper-parameters lr={lr}, betas={betas}, eps={eps}")
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))
        self.step_fn = step_fn

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            by_step: dict[int, list[torch.Tensor]] = {}  # params that share a step count
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["step"] += 1
                by_step.setdefault(state["step"], []).append(p)
            for step, params in by_step.items():
                states = [self.state[p] for p in params]
                if self.step_fn is not None:
                    for p, st in zip(params, states):
                        new, st["exp_avg"], st["exp_avg_sq"] = self.step_fn(
                            p.detach().clone(), p.grad, st["exp_avg"], st["exp_avg_sq"], step,
                            group["lr"], group["betas"], group["eps"], group["weight_decay"])
                        p.copy_(new)
                    continue
                adamw_step_foreach(params, [p.grad for p in params],
                                   [st["exp_avg"] for st in states],
                                   [st["exp_avg_sq"] for st in states], step, group["lr"],
                                   group["betas"], group["eps"], group["weight_decay"])
        return loss


def adamw_step_foreach(
    params: list[torch.Tensor],
    grads: list[torch.Tensor],
    ms: list[torch.Tensor],
    vs: list[torch.Tensor],
    step: int,
    lr: float,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 0.01,
) -> None:
    """``adamw_step`` applied to many tensors at once with PyTorch's multi-tensor ("foreach")
    kernels: the same arithmetic, a handful of kernel launches instead of one per tensor."""
    beta1, beta2 = betas
    torch._foreach_mul_(params, 1 - lr * weight_decay)
    torch._foreach_mul_(ms, beta1)
    torch._foreach_add_(ms, grads, alpha=1 - beta1)
    torch._foreach_mul_(vs, beta2)
    torch._foreach_addcmul_(vs, grads, grads, value=1 - beta2)
    bias1, bias2 = 1 - beta1**step, 1 - beta2**step
    denom = torch._foreach_sqrt(vs)
    torch._foreach_div_(denom, math.sqrt(bias2))
    torch._foreach_add_(denom, eps)
    torch._foreach_addcdiv_(params, ms, denom, value=-lr / bias1)


def decay_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Two param groups: matrices decay, vectors (norm gains, biases) do not — GPT-2/nanoGPT's
    rule; embeddings are matrices and decay too. Tied weights appear once."""
    decay, no_decay = [], []
    for p in model.parameters():  # parameters() yields a tied tensor once
        if p.requires_grad:
            (decay if p.dim() >= 2 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]
