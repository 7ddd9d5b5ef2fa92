"""Low-rank compression: replace W (out, in) by its best rank-r approximation B A.

By Eckart-Young the truncated SVD ``W ≈ U_r Σ_r V_r^T`` minimises the Frobenius error among all
rank-r matrices; storing ``B = U_r Σ_r`` (out, r) and ``A = V_r^T`` (r, in) saves memory when
``r (out + in) < out · in``. The relative error is ``sqrt(Σ_{i>r} σ_i²) / ||W||_F``. Trained LLM
weights are close to full rank, so SVD alone compresses them poorly — the reason LoRA (chapter 05)
puts low rank in the *update*, and methods such as ASVD (arXiv 2312.05821) weight the SVD by
activations. Taught in chapter 07 (solutions/07_quant).
"""

from __future__ import annotations

import torch
from torch import nn

from llmlab.nn import Linear
from llmlab.quant.linear import block_linears, replace_module


def svd_factors(w: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """w: (out, in) -> (B (out, r), A (r, in)) with B A the best rank-r approximation."""
    if not 0 < rank <= min(w.shape):
        raise ValueError(f"rank must be in 1..{min(w.shape)}, got {rank}")
    u, s, vh = torch.linalg.svd(w.float(), full_matrices=False)
    return u[:, :rank] * s[:rank], vh[:rank]


def relative_error(w: torch.Tensor, rank: int) -> float:
    """||W - B A||_F / ||W||_F of the rank-r truncation, from the singular values."""
    s = torch.linalg.svdvals(w.float())
    return (s[rank:].pow(2).sum() / s.pow(2).sum()).sqrt().item()


class LowRankLinear(nn.Module):
    """y = (x A^T) B^T + b: two thin matmuls. x: (..., in) -> (..., out)."""

    def __init__(self, b: torch.Tensor, a: torch.Tensor, bias: torch.Tensor | None = None) -> None:
        super().__init__()
        self.in_features, self.out_features = a.shape[1], b.shape[0]
        self.down = Linear(a.shape[1], a.shape[0], bias=False)
        self.up = Linear(b.shape[1], b.shape[0], bias=bias is not None)
        with torch.no_grad():
            self.down.weight.copy_(a)
            self.up.weight.copy_(b)
            if bias is not None:
                self.up.bias.copy_(bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(self.down(x))


@torch.no_grad()
def lowrank_model(model: nn.Module, rank_fraction: float = 0.5) -> nn.Module:
    """Replace every block linear by a rank ``rank_fraction * min(out, in)`` factorization."""
    for name, lin in list(block_linears(model).items()):
        r = max(1, int(rank_fraction * min(lin.weight.shape)))
        replace_module(model, name, LowRankLinear(*svd_factors(lin.weight, r), lin.bias))
    return model
