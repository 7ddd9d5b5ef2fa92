"""AWQ: activation-aware weight quantization by a per-channel scale search.

"AWQ: Activation-aware Weight Quantization for LLM Compression and Acceleration" (Lin et al.,
arXiv 2306.00978). The weights that meet large activations matter most. Scaling input channel j of
W up by ``s_j`` (and the activation down by it) shrinks that weight's *relative* rounding error
without changing the float function. AWQ picks

    s = s_X^α / sqrt(max s_X^α · min s_X^α),    s_X = mean_tokens |X_j|,

with α chosen on a grid of 20 values in [0, 1) to minimise ``||X W^T - (X/s) Q(W s)^T||²`` on
calibration data, for each group of linears that share an input. Scales are folded into the
preceding norm or linear (:func:`llmlab.quant.smoothquant.fold_scales`); the attention output
projection, behind the attention non-linearity, keeps its ``1/s`` on the layer. Simplifications:
the loss is each group's output (not the whole block's), and AWQ's weight-clipping search is left
out. Taught in chapter 07 (solutions/07_quant).
"""

from __future__ import annotations

import torch
from torch import nn

from llmlab.quant.calibrate import collect_inputs
from llmlab.quant.formats import fake_quantize
from llmlab.quant.linear import QuantLinear, replace_module
from llmlab.quant.smoothquant import block_names_in, fold_scales, input_groups


def _rtn(w: torch.Tensor, bits: int, group_size: int) -> torch.Tensor:
    gran = "group" if 0 < group_size < w.shape[1] else "channel"
    return fake_quantize(w, bits, symmetric=False, granularity=gran, group_size=group_size)


@torch.no_grad()
def awq_search(x: torch.Tensor, weights: list[torch.Tensor], bits: int = 4, group_size: int = 128,
               n_grid: int = 20) -> tuple[torch.Tensor, float]:
    """Best per-channel scale for linears sharing input x: (tokens, in) -> (s (in,), alpha)."""
    W = torch.cat([w.float() for w in weights])  # (sum of out, in)
    x = x.float()
    y = x @ W.t()
    s_x = x.abs().mean(0)
    best = (float("inf"), torch.ones_like(s_x), 0.0)
    for k in range(n_grid):
        alpha = k / n_grid
        s = s_x.pow(alpha).clamp(min=1e-4)
        s = s / (s.max() * s.min()).sqrt()
        err = (x @ (_rtn(W * s, bits, group_size) / s).t() - y).pow(2).mean().item()
        if err < best[0]:
            best = (err, s, alpha)
    return best[1], best[2]


@torch.no_grad()
def awq_quantize_model(model: nn.Module, calib: torch.Tensor, bits: int = 4,
                       group_size: int = 128, n_grid: int = 20) -> nn.Module:
    """AWQ every block linear of ``model`` in place (scales searched on ``calib``: (n, seq)),
    block by block; then round to nearest into :class:`QuantLinear`. Returns the model."""
    for i, block in enumerate(model.blocks):
        prefix = f"blocks.{i}."
        inputs = collect_inputs(model, calib, [prefix + n for n in block_names_in(block)])
        smooth: dict[str, torch.Tensor] = {}
        for producer, names in input_groups(block):
            s, _ = awq_search(inputs[prefix + names[0]], [block.get_submodule(n).weight for n in names],
                              bits, group_size, n_grid)
            if producer is None:  # no place to fold it: the layer divides its input by s
                for n in names:
                    block.get_submodule(n).weight.mul_(s)
                    smooth[n] = s
            else:
                fold_scales(block, producer, names, s)
        for n in block_names_in(block):
            lin = block.get_submodule(n)
            replace_module(block, n, QuantLinear.from_weight(lin.weight, lin.bias, bits, group_size,
                                                             smooth=smooth.get(n)))
    return model
