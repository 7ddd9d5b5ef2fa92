"""Pruning: set weights to zero — by magnitude, by Wanda's activation-aware score, or N:M.

- Magnitude: drop the smallest ``|W_ij|`` of each layer ("Learning both Weights and Connections",
  Han et al., arXiv 1506.02626).
- Wanda: score ``|W_ij| · ||X_j||_2`` (weight times the norm of the input feature it multiplies),
  compared within each output row ("A Simple and Effective Pruning Approach for Large Language
  Models", Sun et al., arXiv 2306.11695). No weight update, one forward pass of calibration data.
- N:M semi-structured (2:4): in every group of M consecutive input weights keep the N with the
  highest score — the pattern NVIDIA's sparse tensor cores run at 2x ("Accelerating Sparse Deep
  Neural Networks", Mishra et al., arXiv 2104.08378).
SparseGPT, which also updates the remaining weights, is in :mod:`llmlab.quant.sparsegpt`.
Taught in chapter 07 (solutions/07_quant).
"""

from __future__ import annotations

import torch
from torch import nn

from llmlab.quant.calibrate import block_names, collect_inputs


def wanda_score(w: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """|W| * ||X_j||_2. w: (out, in), x: (tokens, in) -> (out, in)."""
    return w.abs() * x.float().norm(dim=0).unsqueeze(0)


def unstructured_mask(score: torch.Tensor, sparsity: float, per_row: bool = True) -> torch.Tensor:
    """True = keep. Drops the ``sparsity`` fraction of lowest scores in each row (or the layer)."""
    if not 0 <= sparsity < 1:
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity}")
    s = score if per_row else score.reshape(1, -1)
    k = int(s.shape[1] * sparsity)
    mask = torch.ones_like(s, dtype=torch.bool)
    if k:
        drop = s.topk(k, dim=1, largest=False).indices
        mask.scatter_(1, drop, False)
    return mask.reshape(score.shape)


def nm_mask(score: torch.Tensor, n: int = 2, m: int = 4) -> torch.Tensor:
    """Keep the n highest scores in every m consecutive columns. score: (out, in) -> bool mask."""
    if score.shape[1] % m or not 0 < n <= m:
        raise ValueError(f"need 0 < n <= m and in_features % m == 0, got n={n}, m={m}, "
                         f"shape {tuple(score.shape)}")
    g = score.reshape(score.shape[0], -1, m)
    keep = g.topk(n, dim=-1).indices
    return torch.zeros_like(g, dtype=torch.bool).scatter_(-1, keep, True).reshape(score.shape)


@torch.no_grad()
def prune_model(model: nn.Module, method: str = "wanda", sparsity: float = 0.5,
                calib: torch.Tensor | None = None, nm: tuple[int, int] | None = None) -> nn.Module:
    """Prune every block linear in place. method: "magnitude" (per layer) or "wanda" (per row,
    needs ``calib``: (n, seq)); ``nm=(2, 4)`` uses the N:M pattern instead of ``sparsity``."""
    if method not in ("magnitude", "wanda"):
        raise ValueError(f"method must be 'magnitude' or 'wanda', got {method!r}")
    if method == "wanda" and calib is None:
        raise ValueError("Wanda needs calibration ids (calib) to measure ||X_j||")
    for i in range(len(model.blocks)):
        names = block_names(model, i)
        inputs = collect_inputs(model, calib, names) if method == "wanda" else {}
        for name in names:
            w = model.get_submodule(name).weight
            score = wanda_score(w, inputs[name]) if method == "wanda" else w.abs()
            mask = nm_mask(score, *nm) if nm else unstructured_mask(score, sparsity, method == "wanda")
            w.mul_(mask)
    return model


def sparsity_of(model: nn.Module) -> float:
    """Fraction of zeros among the block linears' weights."""
    from llmlab.quant.linear import block_linears

    ws = [m.weight for m in block_linears(model).values()]
    return sum((w == 0).sum().item() for w in ws) / sum(w.numel() for w in ws)
