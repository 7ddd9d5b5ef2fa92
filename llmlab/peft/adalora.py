"""AdaLoRA: LoRA in SVD form, with the rank budget moved to where it matters during training.

Zhang et al., "AdaLoRA: Adaptive Budget Allocation for Parameter-Efficient Fine-Tuning",
arXiv:2303.10512. Each adapted layer holds ΔW = P Λ Q (section 3.1) with P: (out, r),
Λ = diag(λ): (r,), Q: (r, in); P and Q are kept near-orthogonal by a regulariser
R = ||PᵀP − I||²_F + ||QQᵀ − I||²_F (equation 4), so the λ_i act as singular values and a
"triplet" (P_{:,i}, λ_i, Q_{i,:}) can be switched off by zeroing λ_i alone.

Budget reallocation (section 3.2-3.3): every parameter w gets a sensitivity I = |w ∂L/∂w|,
smoothed Ī ← β1 Ī + (1 − β1) I, with uncertainty Ū ← β2 Ū + (1 − β2) |I − Ī|, score s = Ī Ū.
A triplet's score is S_i = s(λ_i) + mean_j s(P_{ji}) + mean_j s(Q_{ij}). The total budget b(t)
(number of triplets kept, over all layers) falls on a cubic schedule from the initial to the
target total rank (equation 12); after each step only the top-b(t) triplets keep their λ.
Layout and scaling follow ``peft``'s ``AdaLoraConfig``: λ starts at zero, P and Q at N(0, 0.02).
Not here: ``peft``'s rank pattern export and resizing the matrices after training.
Taught in chapter 05 (solutions/05_peft).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from llmlab.peft.inject import freeze, replace_modules


class SVDLinear(nn.Module):
    """A frozen linear layer plus (alpha / r) · P diag(λ) Q x. (..., in) -> (..., out)."""

    def __init__(self, base: nn.Module, r: int = 12, alpha: float = 32.0) -> None:
        super().__init__()
        if r < 1:
            raise ValueError(f"AdaLoRA rank must be >= 1, got {r}")
        out_f, in_f = base.weight.shape
        self.base, self.r, self.scaling = base, r, alpha / r
        dev = base.weight.device
        self.lora_A = nn.Parameter(torch.randn(r, in_f, device=dev) * 0.02)  # Q: (r, in)
        self.lora_E = nn.Parameter(torch.zeros(r, device=dev))  # λ: (r,)
        self.lora_B = nn.Parameter(torch.randn(out_f, r, device=dev) * 0.02)  # P: (out, r)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.linear(x, (self.lora_A * self.lora_E[:, None]).to(x.dtype))  # (..., r)
        return self.base(x) + self.scaling * F.linear(h, self.lora_B.to(x.dtype))

    def orthogonality(self) -> torch.Tensor:
        """||PᵀP − I||²_F + ||QQᵀ − I||²_F (a scalar)."""
        eye = torch.eye(self.r, device=self.lora_A.device)
        P, Q = self.lora_B, self.lora_A
        return (P.T @ P - eye).pow(2).sum() + (Q @ Q.T - eye).pow(2).sum()


def apply_adalora(model: nn.Module, r: int = 12, alpha: float = 32.0,
                  target_modules=("q_proj", "v_proj")) -> nn.Module:
    """Freeze ``model`` and wrap the targets in :class:`SVDLinear`; return the model."""
    freeze(model)
    replace_modules(model, target_modules, lambda _, m: SVDLinear(m, r, alpha))
    return model


def orthogonal_regularization(model: nn.Module) -> torch.Tensor:
    """Mean of :meth:`SVDLinear.orthogonality` over the adapted layers (add it, weighted, to the loss)."""
    terms = [m.orthogonality() for m in model.modules() if isinstance(m, SVDLinear)]
    if not terms:
        raise ValueError("the model has no SVDLinear layers; call apply_adalora first")
    return torch.stack(terms).mean()


def budget_schedule(step: int, initial: int, target: int, total_steps: int,
                    warmup: int, final: int) -> int:
    """b(t): ``initial`` for t <= warmup, ``target`` after total - final, cubic in between."""
    if not 0 <= warmup < total_steps - final:
        raise ValueError(f"need 0 <= warmup < total_steps - final, got {warmup}, {total_steps}, "
                         f"{final}")
    if step <= warmup:
        return initial
    if step > total_steps - final:
        return target
    frac = 1 - (step - warmup) / (total_steps - final - warmup)
    return int(target + (initial - target) * frac ** 3)


class RankAllocator:
    """Tracks importance scores and masks the least important triplets of an AdaLoRA model.

    Call :meth:`step` after ``loss.backward()`` and ``optimizer.step()``, before the gradients
    are cleared. ``target_rank``: average rank per layer at the end (the budget is
    ``target_rank · n_layers`` triplets).
    """

    def __init__(self, model: nn.Module, target_rank: int, total_steps: int, warmup: int = 0,
                 final: int = 0, beta1: float = 0.85, beta2: float = 0.85) -> None:
        self.layers = {n: m for n, m in model.named_modules() if isinstance(m, SVDLinear)}
        if not self.layers:
            raise ValueError("the model has no SVDLinear layers; call apply_adalora first")
        self.initial = sum(m.r for m in self.layers.values())
        self.target = target_rank * len(self.layers)
        self.total_steps, self.warmup, self.final = total_steps, warmup, final
        self.beta1, self.beta2 = beta1, beta2
        self.ipt: dict[int, torch.Tensor] = {}  # Ī per parameter
        self.unc: dict[int, torch.Tensor] = {}  # Ū per parameter

    @torch.no_grad()
    def score(self, p: torch.Tensor) -> torch.Tensor:
        """Update Ī, Ū of parameter ``p`` from its gradient; return s = Ī Ū (p's shape)."""
        sens = (p * p.grad).abs()
        key = id(p)
        if key not in self.ipt:
            self.ipt[key], self.unc[key] = torch.zeros_like(p), torch.zeros_like(p)
        self.ipt[key].mul_(self.beta1).add_(sens, alpha=1 - self.beta1)
        self.unc[key].mul_(self.beta2).add_((sens - self.ipt[key]).abs(), alpha=1 - self.beta2)
        return self.ipt[key] * self.unc[key]

    @torch.no_grad()
    def triplet_scores(self) -> dict[str, torch.Tensor]:
        """S_i for every layer: (r,) each."""
        return {n: self.score(m.lora_E) + self.score(m.lora_B).mean(0)
                + self.score(m.lora_A).mean(1) for n, m in self.layers.items()}

    @torch.no_grad()
    def step(self, step: int) -> int:
        """Update the scores and zero λ outside the budget; returns the budget b(step)."""
        scores = self.triplet_scores()
        budget = budget_schedule(step, self.initial, self.target, self.total_steps,
                                 self.warmup, self.final)
        if step > self.warmup and budget < self.initial:
            self.mask(scores, budget)
        return budget

    @torch.no_grad()
    def mask(self, scores: dict[str, torch.Tensor], budget: int) -> None:
        """Zero λ_i of every triplet outside the ``budget`` highest scores (over all layers)."""
        flat = torch.cat([scores[n] for n in self.layers])
        threshold = flat.kthvalue(len(flat) - budget).values
        for n, m in self.layers.items():
            m.lora_E.masked_fill_(scores[n] <= threshold, 0.0)

    def ranks(self) -> dict[str, int]:
        """Triplets still alive (λ != 0) per layer."""
        return {n: int((m.lora_E != 0).sum()) for n, m in self.layers.items()}
