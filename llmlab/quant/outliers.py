"""Activation outliers: measure them, and inject them into a model without changing its function.

Large LLMs (> ~6 B parameters) develop a few hidden dimensions whose activations are 20-100x the
others in nearly every token ("LLM.int8()", arXiv 2208.07339, section 3; "Massive Activations in
Large Language Models", arXiv 2402.17762). Small models such as the book's show only mild ones.
:func:`inject_outliers` reproduces the phenomenon exactly where it appears in big models — the
normalized input of attention and MLP — with SmoothQuant's identity run backwards: multiply a norm's
gain on a few channels by ``k`` and divide the matching weight columns of the linears that read it
by ``k``. The float model computes the same function (up to rounding); its activations now have
outlier channels and its weights tiny columns, which is what quantizers must survive.
Taught in chapter 07 (solutions/07_quant).
"""

from __future__ import annotations

import torch
from torch import nn

from llmlab.quant.smoothquant import fold_scales, input_groups


@torch.no_grad()
def inject_outliers(model: nn.Module, n_channels: int = 2, factor: float = 30.0,
                    seed: int = 0) -> list[int]:
    """Make ``n_channels`` hidden dimensions (the same in every block, as in real models)
    ``factor`` times larger at the input of every norm-fed linear group; in place.
    Returns the channel indices."""
    d = model.config.d_model
    if not 0 < n_channels <= d:
        raise ValueError(f"n_channels must be in 1..{d}, got {n_channels}")
    g = torch.Generator().manual_seed(seed)
    channels = torch.randperm(d, generator=g)[:n_channels].sort().values.tolist()
    s = torch.ones(d)
    s[channels] = 1 / factor  # fold_scales multiplies weights by s and divides the norm by s
    for block in model.blocks:
        for producer, names in input_groups(block):
            if producer is not None and producer.startswith("norm"):
                fold_scales(block, producer, names, s)
    return channels


def outlier_ratio(x: torch.Tensor) -> float:
    """max over channels of max|x_j| divided by the median channel's max|x_j|. x: (tokens, d)."""
    a = x.reshape(-1, x.shape[-1]).abs().amax(0)
    return (a.max() / a.median().clamp(min=1e-12)).item()


def kurtosis(x: torch.Tensor) -> float:
    """E[(x - μ)^4] / σ^4 of all values (3 for a Gaussian; outliers make it large)."""
    x = x.float().reshape(-1)
    c = x - x.mean()
    return (c.pow(4).mean() / c.pow(2).mean().pow(2)).item()
