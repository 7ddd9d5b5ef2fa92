"""IA3: rescale activations with learned vectors — the smallest adapter that still works.

Liu et al., "Few-Shot Parameter-Efficient Fine-Tuning is Better and Cheaper than In-Context
Learning" (T-Few), arXiv:2205.05638. (IA)^3 multiplies the keys, the values and the input of the
MLP's down projection by learned vectors l, initialised to ones:

    k = l_k ⊙ (W_k x),   v = l_v ⊙ (W_v x),   MLP: W_down (l_ff ⊙ h)

So a "feed-forward" target scales its *input* (l: (in,)), any other target its *output*
(l: (out,)), as in ``peft``'s ``IA3Config(feedforward_modules=...)``. Both fold into W exactly.
Taught in chapter 05 (solutions/05_peft).
"""

from __future__ import annotations

import torch
from torch import nn

from llmlab.peft.inject import freeze, name_matches, replace_modules


class IA3Linear(nn.Module):
    """A frozen linear layer with a learned scaling vector ``ia3_l``. (..., in) -> (..., out).

    feedforward=True: y = base(x ⊙ l), l: (in,); otherwise y = base(x) ⊙ l, l: (out,).
    """

    def __init__(self, base: nn.Module, feedforward: bool = False) -> None:
        super().__init__()
        out_f, in_f = base.weight.shape
        self.base, self.feedforward, self.merged = base, feedforward, False
        self.ia3_l = nn.Parameter(torch.ones(in_f if feedforward else out_f,
                                             device=base.weight.device))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.merged:
            return self.base(x)
        l = self.ia3_l.to(x.dtype)
        return self.base(x * l) if self.feedforward else self.base(x) * l

    @torch.no_grad()
    def merge(self) -> None:
        if not self.merged:
            self._scale(self.ia3_l)
            self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        if self.merged:
            self._scale(1.0 / self.ia3_l)
            self.merged = False

    def _scale(self, l: torch.Tensor) -> None:
        w = self.base.weight
        if self.feedforward:
            w *= l[None, :].to(w.dtype)  # scales the input columns
        else:
            w *= l[:, None].to(w.dtype)  # scales the output rows, and the bias with them
            if getattr(self.base, "bias", None) is not None:
                self.base.bias *= l.to(w.dtype)


def apply_ia3(model: nn.Module, target_modules=("k_proj", "v_proj", "down_proj"),
              feedforward_modules=("down_proj",)) -> nn.Module:
    """Freeze ``model`` and wrap the targets in :class:`IA3Linear` in place; return the model.

    ``feedforward_modules`` must be a subset of ``target_modules`` (as in ``peft``).
    """
    freeze(model)
    replace_modules(model, target_modules,
                    lambda name, m: IA3Linear(m, name_matches(name, feedforward_modules)))
    return model
