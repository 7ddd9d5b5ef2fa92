"""GaLore: full-parameter training whose Adam states live in a low-rank projection of the gradient.

Zhao et al., "GaLore: Memory-Efficient LLM Training by Gradient Low-Rank Projection",
arXiv:2403.03507, Algorithm 1. For a weight W: (m, n) with m <= n and gradient G, every
``update_gap`` steps take P = the first r left singular vectors of G (m, r), then each step

    R = P^T G                     (r, n)   the projected gradient
    M = b1 M + (1 - b1) R,  V = b2 V + (1 - b2) R^2           Adam's moments, (r, n) each
    N = (M / (1 - b1^t)) / (sqrt(V / (1 - b2^t)) + eps)
    W = W - lr · alpha · P N                                  back to (m, n)

(for m > n project from the right: R = G Q with Q (n, r)). Adam's state shrinks from 2mn to
2rn + mr numbers. Unlike LoRA every weight still trains; only its update per window is low-rank.
Not here: the 8-bit and per-layer (fused backward) variants. Taught in chapter 05 (solutions/05_peft).
"""

from __future__ import annotations

import torch


def galore_projector(grad: torch.Tensor, rank: int) -> torch.Tensor:
    """P: (m, r) left singular vectors when m <= n, else Q: (n, r) right singular vectors."""
    if grad.dim() != 2:
        raise ValueError(f"GaLore projects 2-D gradients, got shape {tuple(grad.shape)}")
    U, _, Vh = torch.linalg.svd(grad.float(), full_matrices=False)
    return U[:, :rank] if grad.shape[0] <= grad.shape[1] else Vh[:rank].T


def galore_adam_step(weight: torch.Tensor, grad: torch.Tensor, P: torch.Tensor,
                     exp_avg: torch.Tensor, exp_avg_sq: torch.Tensor, step: int, lr: float,
                     betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                     scale: float = 1.0) -> None:
    """One projected Adam step, in place on ``weight``, ``exp_avg`` and ``exp_avg_sq``.

    weight, grad: (m, n); P: (m, r) if m <= n else (n, r); exp_avg, exp_avg_sq: the projected
    shape, (r, n) or (m, r); step: t >= 1 (for the bias corrections).
    """
    left = weight.shape[0] <= weight.shape[1]
    R = P.T @ grad if left else grad @ P  # (r, n) or (m, r)
    b1, b2 = betas
    exp_avg.mul_(b1).add_(R, alpha=1 - b1)
    exp_avg_sq.mul_(b2).addcmul_(R, R, value=1 - b2)
    N = (exp_avg / (1 - b1 ** step)) / ((exp_avg_sq / (1 - b2 ** step)).sqrt() + eps)
    weight.add_(P @ N if left else N @ P.T, alpha=-lr * scale)


class GaLoreAdamW(torch.optim.Optimizer):
    """AdamW whose 2-D parameters in groups with a ``rank`` take GaLore steps.

    Groups: ``{"params": [...], "rank": r, "update_gap": T, "scale": alpha}`` for projected
    matrices; groups without ``rank`` take ordinary AdamW steps. Decoupled weight decay as AdamW.
    """

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0) -> None:
        if lr <= 0:
            raise ValueError(f"lr must be > 0, got {lr}")
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                                      rank=None, update_gap=200, scale=0.25))

    @torch.no_grad()
    def step(self, closure=None):
        loss = closure() if closure is not None else None
        for g in self.param_groups:
            for p in g["params"]:
                if p.grad is None:
                    continue
                st = self.state[p]
                st["step"] = st.get("step", 0) + 1
                if g["weight_decay"]:
                    p.mul_(1 - g["lr"] * g["weight_decay"])
                if g["rank"] and p.dim() == 2:
                    self._galore(p, st, g)
                else:
                    self._adam(p, st, g)
        return loss

    @staticmethod
    def _galore(p: torch.Tensor, st: dict, g: dict) -> None:
        if (st["step"] - 1) % g["update_gap"] == 0:
            st["P"] = galore_projector(p.grad, g["rank"])
            shape = ((g["rank"], p.shape[1]) if p.shape[0] <= p.shape[1]
                     else (p.shape[0], g["rank"]))
            if "exp_avg" not in st or st["exp_avg"].shape != shape:
                st["exp_avg"] = p.new_zeros(shape)
                st["exp_avg_sq"] = p.new_zeros(shape)
        galore_adam_step(p, p.grad, st["P"], st["exp_avg"], st["exp_avg_sq"], st["step"],
                         g["lr"], g["betas"], g["eps"], g["scale"])

    @staticmethod
    def _adam(p: torch.Tensor, st: dict, g: dict) -> None:
        if "exp_avg" not in st:
            st["exp_avg"], st["exp_avg_sq"] = torch.zeros_like(p), torch.zeros_like(p)
        b1, b2 = g["betas"]
        st["exp_avg"].mul_(b1).add_(p.grad, alpha=1 - b1)
        st["exp_avg_sq"].mul_(b2).addcmul_(p.grad, p.grad, value=1 - b2)
        bc1, bc2 = 1 - b1 ** st["step"], 1 - b2 ** st["step"]
        denom = (st["exp_avg_sq"] / bc2).sqrt().add_(g["eps"])
        p.addcdiv_(st["exp_avg"], denom, value=-g["lr"] / bc1)

    def state_numbers(self) -> int:
        """Numbers held in optimizer state (moments and projectors)."""
        return sum(t.numel() for st in self.state.values() for t in st.values()
                   if isinstance(t, torch.Tensor))


def galore_state_numbers(m: int, n: int, rank: int) -> int:
    """Adam-state numbers of one (m, n) matrix under GaLore: 2 moments of the projected shape
    plus the projector. Compare 2·m·n for Adam."""
    small, big = sorted((m, n))
    return 2 * rank * big + small * rank


