"""LayerNorm (GPT-2) and RMSNorm (Llama), as functions and modules.

- LayerNorm: Ba, Kiros & Hinton, "Layer Normalization", arXiv:1607.06450.
- RMSNorm: Zhang & Sennrich, "Root Mean Square Layer Normalization", arXiv:1910.07467.

RMSNorm drops LayerNorm's mean-centering and bias: y = x / sqrt(mean(x^2) + eps) * g.
Like Hugging Face's ``LlamaRMSNorm`` it normalises in fp32 and casts back, so bf16 activations
do not lose the small mean-square. Taught in chapter 02 (solutions/02_gpt).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def layer_norm(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, eps: float = 1e-5
) -> torch.Tensor:
    """(x - mean) / sqrt(var + eps) * weight + bias over the last dim (biased variance).

    x: (..., d), weight/bias: (d,) -> (..., d)
    """
    mean = x.mean(-1, keepdim=True)
    var = (x - mean).pow(2).mean(-1, keepdim=True)
    y = (x - mean) * torch.rsqrt(var + eps) * weight
    return y + bias if bias is not None else y


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """x / sqrt(mean(x^2) + eps) * weight over the last dim, computed in fp32.

    x: (..., d), weight: (d,) -> (..., d) in x's dtype.
    """
    xf = x.float()
    y = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
    return weight * y.to(x.dtype)


def _check_last_dim(name: str, x: torch.Tensor, d: int) -> None:
    if x.shape[-1] != d:
        raise ValueError(f"{name} expected input (..., {d}), got {tuple(x.shape)}")


class LayerNorm(nn.Module):
    """LayerNorm over the last dim with learned gain and (optional) bias. (..., d) -> (..., d).

    Uses the fused ``F.layer_norm`` kernel; ``layer_norm`` above is its tested definition.
    """

    def __init__(self, d: int, eps: float = 1e-5, bias: bool = True) -> None:
        super().__init__()
        self.d, self.eps = d, eps
        self.weight = nn.Parameter(torch.ones(d))
        self.bias = nn.Parameter(torch.zeros(d)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_last_dim("LayerNorm", x, self.d)
        return F.layer_norm(x, (self.d,), self.weight, self.bias, self.eps)


class RMSNorm(nn.Module):
    """RMSNorm over the last dim with a learned gain. (..., d) -> (..., d)."""

    def __init__(self, d: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.d, self.eps = d, eps
        self.weight = nn.Parameter(torch.ones(d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_last_dim("RMSNorm", x, self.d)
        return rms_norm(x, self.weight, self.eps)
