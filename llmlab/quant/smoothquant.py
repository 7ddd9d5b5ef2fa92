"""SmoothQuant: migrate activation outliers into the weights with a per-channel scale.

"SmoothQuant: Accurate and Efficient Post-Training Quantization for Large Language Models" (Xiao et
al., arXiv 2211.10438). A few input channels of LLM activations are ~100x larger than the rest, so
per-tensor or per-token int8 activations lose the small channels. Since
``X W^T = (X diag(s)^-1) (W diag(s))^T``, dividing channel j of X by

    s_j = max|X_j|^α / max|W_j|^(1-α)        (α = 0.5 by default)

and multiplying column j of W by it balances the two ranges; the division is folded into the
preceding norm's gain (or the preceding linear's rows), so it costs nothing at run time.
:data:`INPUT_GROUPS` lists, for one transformer block, which linears share an input and what
produced it; AWQ (:mod:`llmlab.quant.awq`) folds its scales the same way.
Taught in chapter 07 (solutions/07_quant).
"""

from __future__ import annotations

import torch
from torch import nn

from llmlab.quant.calibrate import block_names, collect_inputs
from llmlab.quant.linear import QuantLinear, replace_module


def input_groups(block: nn.Module) -> list[tuple[str | None, list[str]]]:
    """(producer, linears reading its output) for one block; producer None when a non-linearity
    (attention, GELU) sits in between and the scale cannot be folded into anything."""
    if hasattr(block.mlp, "gate_proj"):  # SwiGLU: silu(gate) * up -> down
        mlp = [("norm2", ["mlp.gate_proj", "mlp.up_proj"]), ("mlp.up_proj", ["mlp.down_proj"])]
    else:
        mlp = [("norm2", ["mlp.fc"]), (None, ["mlp.proj"])]
    return [("norm1", ["attn.q_proj", "attn.k_proj", "attn.v_proj"]), (None, ["attn.o_proj"]), *mlp]


@torch.no_grad()
def fold_scales(block: nn.Module, producer: str | None, linears: list[str], s: torch.Tensor) -> None:
    """X W^T = (X / s)(W s)^T: multiply the linears' input columns by s: (in,) and divide the
    producer's output (norm gain and bias, or a linear's rows) by s. Exact in real arithmetic."""
    if producer is None:
        raise ValueError(f"cannot fold a scale in front of {linears}: nothing linear produces "
                         "their input (store it on the layer instead)")
    for name in linears:
        block.get_submodule(name).weight.mul_(s)
    prev = block.get_submodule(producer)
    if prev.weight.dim() == 1:  # a norm's gain
        prev.weight.div_(s)
    else:  # a linear's output rows
        prev.weight.div_(s.unsqueeze(1))
    if getattr(prev, "bias", None) is not None:
        prev.bias.div_(s)


def smoothquant_scales(x_absmax: torch.Tensor, weights: list[torch.Tensor], alpha: float = 0.5
                       ) -> torch.Tensor:
    """s_j = max|X_j|^α / max_j|W_:,j|^(1-α) over all linears sharing the input. x_absmax: (in,)."""
    w_absmax = torch.stack([w.abs().amax(0) for w in weights]).amax(0)
    return (x_absmax.clamp(min=1e-5).pow(alpha) / w_absmax.clamp(min=1e-5).pow(1 - alpha)).clamp(min=1e-5)


@torch.no_grad()
def smoothquant_model(model: nn.Module, calib: torch.Tensor, alpha: float = 0.5) -> nn.Module:
    """Smooth the inputs of every linear that reads a norm's output (the paper's choice: QKV and
    the first MLP layer), folding 1/s into the norm. The float model computes the same function."""
    for i, block in enumerate(model.blocks):
        prefix = f"blocks.{i}."
        inputs = collect_inputs(model, calib, [prefix + n for n in block_names_in(block)])
        for producer, names in input_groups(block):
            if producer is None or not producer.startswith("norm"):
                continue
            x_absmax = inputs[prefix + names[0]].abs().amax(0)
            s = smoothquant_scales(x_absmax, [block.get_submodule(n).weight for n in names], alpha)
            fold_scales(block, producer, names, s)
    return model


def block_names_in(block: nn.Module) -> list[str]:
    return [n for _, names in input_groups(block) for n in names]


@torch.no_grad()
def w8a8_model(model: nn.Module, act_granularity: str = "token",
               outlier_threshold: float | None = None) -> nn.Module:
    """Every block linear -> W8A8 :class:`QuantLinear` (int8 per-channel weights, int8 activations
    per token or per tensor, integer matmul), in place. ``outlier_threshold`` turns on
    LLM.int8()'s decomposition."""
    for name in [n for i in range(len(model.blocks)) for n in block_names(model, i)]:
        lin = model.get_submodule(name)
        replace_module(model, name, QuantLinear.from_weight(
            lin.weight, lin.bias, bits=8, group_size=0, act_bits=8, act_granularity=act_granularity,
            outlier_threshold=outlier_threshold))
    return model
