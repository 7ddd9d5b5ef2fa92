"""GPTQ: one-shot weight quantization that corrects each rounding error with the columns not yet
quantized.

"GPTQ: Accurate Post-Training Quantization for Generative Pre-trained Transformers" (Frantar et
al., arXiv 2210.17323), algorithm 1. For a layer ``y = x W^T`` the loss ``||X W^T - X Ŵ^T||²`` has
Hessian ``H = 2 X^T X`` (per output row, shared by all rows). Optimal Brain Quantization quantizes
one input column ``j`` at a time and moves its error onto the remaining columns:

    δ = (w_j - q(w_j)) / [H^-1]_jj,     W[:, j+1:] -= δ [H^-1]_{j, j+1:}

GPTQ's three tricks: (1) all rows share the column order, so ``H^-1`` is updated once per column
for the whole matrix; (2) the rows of the *upper Cholesky factor* of ``H^-1`` are exactly the
``[H^-1]_{j, j:} / sqrt([H^-1]_jj)`` the sweep needs, so no inverse is updated at all (with
dampening ``λ = 0.01 mean(diag H)`` for stability); (3) *lazy batch* updates: columns are processed
in blocks of 128 and the rest of the matrix is updated once per block (a matmul instead of 128
rank-1 updates). *Act-order* quantizes columns with the largest ``H_jj`` (the most active inputs)
first. :func:`obs_sweep` is the shared column loop; SparseGPT uses it to prune. Taught in chapter 07
(solutions/07_quant).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from llmlab.quant.calibrate import block_names, collect_inputs, hessian
from llmlab.quant.formats import quant_params, quantize_codes
from llmlab.quant.linear import QuantLinear, replace_module


def inverse_hessian_factor(H: torch.Tensor, damp: float = 0.01) -> torch.Tensor:
    """Upper Cholesky factor U of (H + λI)^-1 (U^T U = (H + λI)^-1), λ = damp * mean(diag H).

    H: (n, n) -> (n, n) upper triangular float32. Row j of U is ``[H^-1]_{j,j:} / sqrt([H^-1]_jj)``
    of the Hessian restricted to the columns j: not yet quantized.
    """
    H = H.double().clone()
    dead = torch.diag(H) == 0  # inputs that never fire: any value is fine, keep H invertible
    H[dead, dead] = 1
    H += damp * torch.diag(H).mean() * torch.eye(H.shape[0], dtype=H.dtype)
    L = torch.linalg.cholesky(H)
    Hinv = torch.cholesky_inverse(L)
    return torch.linalg.cholesky(Hinv, upper=True).float()


def obs_sweep(W: torch.Tensor, U: torch.Tensor, step: Callable[[torch.Tensor, int, torch.Tensor],
              torch.Tensor], block_size: int = 128) -> torch.Tensor:
    """The Optimal-Brain-Surgeon column loop with lazy batch updates.

    W: (rows, n) float, U: (n, n) from :func:`inverse_hessian_factor`. ``step(w, j, rest)`` returns
    the new value of column ``j`` (quantized or pruned) given its current value w: (rows,) and the
    up-to-date columns ``j ..`` of the current block, rest: (rows, <= block_size); its error is
    spread over the later columns. -> (rows, n).
    """
    W = W.float().clone()
    n = W.shape[1]
    for i1 in range(0, n, block_size):
        i2 = min(i1 + block_size, n)
        W1, U1 = W[:, i1:i2].clone(), U[i1:i2, i1:i2]
        Err1 = torch.zeros_like(W1)
        for i in range(i2 - i1):
            w, d = W1[:, i], U1[i, i]
            q = step(w, i1 + i, W1[:, i:])
            err = (w - q) / d
            W1[:, i:] -= err.unsqueeze(1) @ U1[i, i:].unsqueeze(0)  # (now W1[:, i] == q)
            W1[:, i] = q
            Err1[:, i] = err
        W[:, i1:i2] = W1
        W[:, i2:] -= Err1 @ U[i1:i2, i2:]  # the lazy update of all later columns at once
    return W


def gptq_quantize(W: torch.Tensor, H: torch.Tensor, bits: int = 4, group_size: int = 128,
                  act_order: bool = True, damp: float = 0.01, block_size: int = 128,
                  symmetric: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Quantize W: (out, in) with Hessian H: (in, in).

    -> (codes (out, in) int32, scale (out, in/group), zero (out, in/group)), groups over the
    original column order. Group parameters come from the updated weights when the sweep reaches a
    group's first column; with ``act_order`` (columns out of order) they are fixed up front from
    the original weights ("static groups"), so the checkpoint layout stays the same.
    """
    out_f, n = W.shape
    gs = group_size if group_size > 0 else n
    if n % gs:
        raise ValueError(f"group_size {gs} must divide in_features {n}")
    if H.shape != (n, n):
        raise ValueError(f"Hessian must be ({n}, {n}) for W {tuple(W.shape)}, got {tuple(H.shape)}")
    W = W.float().clone()
    W[:, torch.diag(H) == 0] = 0
    perm = torch.argsort(torch.diag(H), descending=True) if act_order else torch.arange(n)
    scale = torch.empty(out_f, n // gs)
    zero = torch.empty(out_f, n // gs)

    def set_group(g: int, cols: torch.Tensor) -> None:
        s, z = quant_params(cols.unsqueeze(1), bits, symmetric)
        scale[:, g], zero[:, g] = s.half().float()[:, 0, 0], z[:, 0, 0]

    static = act_order or gs == n
    if static:
        for g in range(n // gs):
            set_group(g, W[:, g * gs:(g + 1) * gs])
    else:  # a group must lie inside one lazy block
        block_size = max(gs, block_size // gs * gs)

    def step(w: torch.Tensor, j: int, rest: torch.Tensor) -> torch.Tensor:
        col = int(perm[j])
        g = col // gs
        if not static and col % gs == 0:  # a group's first column: its params from the live weights
            set_group(g, rest[:, :gs])
        s, z = scale[:, g], zero[:, g]
        q = quantize_codes(w, s, z, bits, symmetric)
        return (q - z) * s

    U = inverse_hessian_factor(H[perm][:, perm], damp)
    Q = obs_sweep(W[:, perm], U, step, block_size)
    Q = Q[:, torch.argsort(perm)]
    codes = quantize_codes(Q.view(out_f, -1, gs), scale.unsqueeze(-1), zero.unsqueeze(-1), bits,
                           symmetric).reshape(out_f, n)
    return codes, scale, zero


@torch.no_grad()
def gptq_quantize_model(model: nn.Module, calib: torch.Tensor, bits: int = 4, group_size: int = 128,
                        act_order: bool = True, damp: float = 0.01) -> nn.Module:
    """GPTQ every block linear of ``model`` in place, block by block: the inputs of block i are
    recorded with blocks < i already quantized (the paper's sequential order). calib: (n, seq)."""
    for i in range(len(model.blocks)):
        names = block_names(model, i)
        inputs = collect_inputs(model, calib, names)
        for name in names:
            lin = model.get_submodule(name)
            codes, scale, zero = gptq_quantize(lin.weight, hessian(inputs[name]), bits, group_size,
                                               act_order, damp)
            replace_module(model, name, QuantLinear.from_weight(
                lin.weight, lin.bias, bits, group_size, codes=codes, scale=scale, zero=zero))
    return model
