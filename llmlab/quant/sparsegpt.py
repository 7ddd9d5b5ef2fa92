"""SparseGPT: prune with the GPTQ machinery — choose the mask by OBS saliency and update the
remaining weights to compensate.

"SparseGPT: Massive Language Models Can Be Accurately Pruned in One-Shot" (Frantar & Alistarh,
arXiv 2301.00774). Removing weight ``w_ij`` costs ``w_ij² / [H^-1]_jj`` (Optimal Brain Surgeon);
within each block of 128 columns the lowest-cost fraction is masked, and the column sweep of
:func:`llmlab.quant.gptq.obs_sweep` zeroes them one column at a time, pushing the error onto the
columns not yet visited. N:M masks are chosen every M columns. Taught in chapter 07
(solutions/07_quant).
"""

from __future__ import annotations

import torch
from torch import nn

from llmlab.quant.calibrate import block_names, collect_inputs, hessian
from llmlab.quant.gptq import inverse_hessian_factor, obs_sweep


def sparsegpt_prune(W: torch.Tensor, H: torch.Tensor, sparsity: float = 0.5,
                    nm: tuple[int, int] | None = None, block_size: int = 128,
                    damp: float = 0.01) -> torch.Tensor:
    """Prune W: (out, in) with Hessian H: (in, in) -> pruned and updated W (out, in)."""
    if not 0 <= sparsity < 1:
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity}")
    U = inverse_hessian_factor(H, damp)
    d = torch.diag(U)  # sqrt([H^-1]_jj) of the columns still to visit, as the sweep sees it
    n = W.shape[1]
    mask = torch.zeros_like(W, dtype=torch.bool)  # True = prune

    def step(w: torch.Tensor, j: int, rest: torch.Tensor) -> torch.Tensor:
        if nm is None and j % block_size == 0:  # choose this block's mask from the live weights
            width = min(block_size, n - j)
            cost = rest[:, :width].pow(2) / d[j:j + width].pow(2)
            k = int(cost.numel() * sparsity)
            if k:
                thresh = cost.reshape(-1).kthvalue(k).values
                mask[:, j:j + width] = cost <= thresh
        if nm is not None and j % nm[1] == 0:
            cost = rest[:, :nm[1]].pow(2) / d[j:j + nm[1]].pow(2)
            drop = cost.topk(nm[1] - nm[0], dim=1, largest=False).indices
            mask[:, j:j + nm[1]].scatter_(1, drop, True)
        return w.masked_fill(mask[:, j], 0)

    return obs_sweep(W, U, step, block_size)


@torch.no_grad()
def sparsegpt_model(model: nn.Module, calib: torch.Tensor, sparsity: float = 0.5,
                    nm: tuple[int, int] | None = None) -> nn.Module:
    """SparseGPT every block linear in place, block by block (calib: (n, seq))."""
    for i in range(len(model.blocks)):
        names = block_names(model, i)
        inputs = collect_inputs(model, calib, names)
        for name in names:
            lin = model.get_submodule(name)
            lin.weight.copy_(sparsegpt_prune(lin.weight, hessian(inputs[name]), sparsity, nm))
    return model
