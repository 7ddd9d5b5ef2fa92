"""The position-wise feed-forward networks: GPT-2's GELU MLP and Llama's SwiGLU.

- GELU MLP: Radford et al., "Language Models are Unsupervised Multitask Learners" (GPT-2, 2019).
- SwiGLU: Shazeer, "GLU Variants Improve Transformer", arXiv:2002.05202:
  FFN(x) = W_down (silu(W_gate x) * W_up x). With d_ff ≈ 8/3 d_model it costs the same
  FLOPs as a 4x GELU MLP.
Taught in chapter 02 (solutions/02_gpt).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from llmlab.nn.functional import silu
from llmlab.nn.linear import Linear


class GeluMLP(nn.Module):
    """x -> proj(gelu(fc(x))).  x: (..., d_model) -> (..., d_model).

    Uses the fused tanh-GELU kernel; ``llmlab.nn.gelu_tanh`` is its tested definition.
    """

    def __init__(self, d_model: int, d_ff: int, bias: bool = True) -> None:
        super().__init__()
        self.fc = Linear(d_model, d_ff, bias=bias)
        self.proj = Linear(d_ff, d_model, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(F.gelu(self.fc(x), approximate="tanh"))


def swiglu(x: torch.Tensor, w_gate: torch.Tensor, w_up: torch.Tensor, w_down: torch.Tensor):
    """SwiGLU with bias-free weights in ``Linear`` layout.

    x: (..., d_model); w_gate, w_up: (d_ff, d_model); w_down: (d_model, d_ff) -> (..., d_model)
    """
    return (silu(x @ w_gate.T) * (x @ w_up.T)) @ w_down.T


class SwiGLU(nn.Module):
    """x -> down_proj(silu(gate_proj(x)) * up_proj(x)).  (..., d_model) -> (..., d_model).

    Uses the fused SiLU kernel; ``swiglu`` above is the tested definition.
    """

    def __init__(self, d_model: int, d_ff: int, bias: bool = False) -> None:
        super().__init__()
        self.gate_proj = Linear(d_model, d_ff, bias=bias)
        self.up_proj = Linear(d_model, d_ff, bias=bias)
        self.down_proj = Linear(d_ff, d_model, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))
