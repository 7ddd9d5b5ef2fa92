"""Quantization-aware training: fake quantization in the forward pass, a straight-through
estimator (STE) in the backward pass.

Rounding has zero gradient almost everywhere, so training through it needs a surrogate: the STE
("Estimating or Propagating Gradients Through Stochastic Neurons", Bengio et al., arXiv 1308.3432)
passes the gradient of the rounded weight straight to the float weight,
``∂L/∂w := ∂L/∂q(w)``, written ``w + (q(w) - w).detach()``. Training with it lets the float
weights move to where their *rounded* values work ("Quantization and Training of Neural Networks
for Efficient Integer-Arithmetic-Only Inference", Jacob et al., arXiv 1712.05877; LLM-QAT, arXiv
2305.17888). After training, :func:`convert_qat` rounds the weights into :class:`QuantLinear`.
Taught in chapter 07 (solutions/07_quant).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from llmlab.nn import Linear
from llmlab.quant.formats import fake_quantize
from llmlab.quant.linear import QuantLinear, block_linears, replace_module


def fake_quant_ste(w: torch.Tensor, bits: int = 4, group_size: int = 64) -> torch.Tensor:
    """Forward: asymmetric group-wise fake quantization of w: (out, in); backward: identity."""
    gran = "group" if 0 < group_size < w.shape[1] else "channel"
    q = fake_quantize(w, bits, symmetric=False, granularity=gran, group_size=group_size)
    return w + (q - w).detach()


class QATLinear(Linear):
    """A ``Linear`` whose forward uses its fake-quantized weight (gradients by the STE)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = False, bits: int = 4,
                 group_size: int = 64) -> None:
        super().__init__(in_features, out_features, bias)
        self.bits, self.group_size = bits, group_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, fake_quant_ste(self.weight, self.bits, self.group_size), self.bias)


def prepare_qat(model: nn.Module, bits: int = 4, group_size: int = 64) -> nn.Module:
    """Swap every block ``Linear`` for a :class:`QATLinear` sharing its parameters (in place)."""
    for name, lin in list(block_linears(model).items()):
        q = QATLinear(lin.in_features, lin.out_features, lin.bias is not None, bits, group_size)
        q.weight, q.bias = lin.weight, lin.bias
        replace_module(model, name, q)
    return model


def convert_qat(model: nn.Module) -> nn.Module:
    """Round every :class:`QATLinear` into a :class:`QuantLinear` (in place)."""
    for name, lin in list(block_linears(model).items()):
        if isinstance(lin, QATLinear):
            replace_module(model, name, QuantLinear.from_weight(lin.weight, lin.bias, lin.bits,
                                                                lin.group_size))
    return model
