"""DoRA: LoRA on the direction of each weight row, plus a trainable magnitude per row.

Liu et al., "DoRA: Weight-Decomposed Low-Rank Adaptation", arXiv:2402.09353. Write each output
row of W as a magnitude times a unit direction, W = m · V / ||V||_c. DoRA trains m directly and
the direction through LoRA:

    W' = m · (W + s B A) / ||W + s B A||_c ,   m initialised to ||W||_c (so W' = W at step 0)

where ||·||_c is the L2 norm of each row (over the input dimension). As the paper (section 4.3)
and ``peft`` do, the norm is treated as a constant in the backward pass (detached), which saves
memory and barely changes training. Taught in chapter 05 (solutions/05_peft).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from llmlab.peft.lora import LoRALinear


def dora_forward(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                 lora_A: torch.Tensor, lora_B: torch.Tensor, magnitude: torch.Tensor,
                 scaling: float) -> torch.Tensor:
    """x W'^T + b with W' = m (W + s B A) / ||W + s B A||_c (the norm detached).

    x: (..., in); weight: (out, in); lora_A: (r, in); lora_B: (out, r); magnitude: (out,)
    -> (..., out)
    """
    adapted = weight + scaling * (lora_B @ lora_A)  # (out, in)
    norm = adapted.norm(dim=1).detach()  # (out,)
    return (magnitude / norm) * F.linear(x, adapted) + (0 if bias is None else bias)


class DoRALinear(LoRALinear):
    """LoRA with a learned per-row magnitude ``lora_magnitude: (out,)``. (..., in) -> (..., out)."""

    def __init__(self, base: nn.Module, r: int = 8, alpha: float = 16.0, dropout: float = 0.0,
                 use_rslora: bool = False) -> None:
        super().__init__(base, r, alpha, dropout, use_rslora)
        self.lora_magnitude = nn.Parameter(base.weight.detach().float().norm(dim=1).clone())
        self.register_buffer("_merge_scale", None, persistent=False)

    def norm_scale(self) -> torch.Tensor:
        """m / ||W + s B A||_c: (out,), the norm detached."""
        w = self.base.weight.float()
        return self.lora_magnitude / (w + self.delta_weight()).norm(dim=1).detach()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base(x)
        if self.merged:
            return y
        # y + (scale - 1) W dx + scale s B A dx, which is scale·(W' x) + b when dropout is off;
        # the form ``peft`` uses, so the base output is computed once.
        dx = self.dropout(x)
        scale = self.norm_scale().to(x.dtype)
        base_dx = y - (0 if self.bias is None else self.bias) if dx is x else \
            F.linear(dx, self.base.weight)
        return y + (scale - 1) * base_dx + scale * self.low_rank(dx)

    @torch.no_grad()
    def merge(self) -> None:
        self._check_mergeable()
        if not self.merged:
            scale = self.norm_scale()
            w = self.base.weight
            w.copy_((scale[:, None] * (w.float() + self.delta_weight())).to(w.dtype))
            self._merge_scale = scale
            self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        if self.merged:
            w = self.base.weight
            w.copy_((w.float() / self._merge_scale[:, None] - self.delta_weight()).to(w.dtype))
            self._merge_scale = None
            self.merged = False
