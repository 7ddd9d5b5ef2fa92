"""LoRA: a frozen weight plus a trainable low-rank update, W x + (alpha/r) B A x.

Hu et al., "LoRA: Low-Rank Adaptation of Large Language Models", arXiv:2106.09685. For a frozen
``W: (out, in)`` LoRA learns ``A: (r, in)`` and ``B: (out, r)`` with r << min(in, out):

    h = W x + b + s · B A dropout(x),   s = alpha / r

A starts random (Kaiming-uniform, as in ``peft``), B starts at zero, so the adapted model is
exactly the base model at step 0. ``merge`` folds s·BA into W (no inference cost), ``unmerge``
takes it out again.

- rsLoRA (Kalajdzievski, "A Rank Stabilization Scaling Factor for Fine-Tuning with LoRA",
  arXiv:2312.03732): s = alpha / sqrt(r) keeps the update's scale stable as r grows.
- LoRA+ (Hayou et al., "LoRA+: Efficient Low Rank Adaptation of Large Models", arXiv:2402.12354):
  B learns with a learning rate ``ratio`` times A's; :func:`loraplus_param_groups`.

:func:`llmlab.peft.apply_lora` (:mod:`llmlab.peft.apply`) wraps a model's layers with it or with
DoRA. Not here: the ``peft`` options for embeddings/convolutions, PiSSA/LoftQ initialisations.
Taught in chapter 05 (solutions/05_peft).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from llmlab.utils import reject_unknown_keys


def lora_scaling(r: int, alpha: float, use_rslora: bool = False) -> float:
    """s = alpha / r (LoRA) or alpha / sqrt(r) (rsLoRA)."""
    if r < 1:
        raise ValueError(f"LoRA rank r must be >= 1, got {r}")
    return alpha / math.sqrt(r) if use_rslora else alpha / r


def lora_forward(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                 lora_A: torch.Tensor, lora_B: torch.Tensor, scaling: float) -> torch.Tensor:
    """x W^T + b + s (x A^T) B^T without forming B A.

    x: (..., in); weight: (out, in); bias: (out,) | None; lora_A: (r, in); lora_B: (out, r)
    -> (..., out). Cost: O(r (in + out)) extra per token instead of O(in · out).
    """
    return F.linear(x, weight, bias) + scaling * F.linear(F.linear(x, lora_A), lora_B)


@reject_unknown_keys
@dataclass
class LoRAConfig:
    """Which modules get an adapter and how big it is (the fields of ``peft.LoraConfig``)."""

    r: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    target_modules: tuple[str, ...] = ("q_proj", "v_proj")
    use_rslora: bool = False
    use_dora: bool = False

    def __post_init__(self) -> None:
        lora_scaling(self.r, self.alpha)  # validates r
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if isinstance(self.target_modules, str):
            self.target_modules = (self.target_modules,)
        if not self.target_modules:
            raise ValueError("target_modules is empty: name at least one module, e.g. 'q_proj'")
        self.target_modules = tuple(self.target_modules)

    @property
    def scaling(self) -> float:
        return lora_scaling(self.r, self.alpha, self.use_rslora)


class LoRALinear(nn.Module):
    """A frozen linear layer ``base`` plus a rank-r update. (..., in) -> (..., out).

    ``base`` is any module with ``weight: (out, in)`` and optional ``bias`` whose forward is
    ``x W^T + b`` (llmlab's or torch's ``Linear``, or a quantized linear that dequantizes).
    """

    def __init__(self, base: nn.Module, r: int = 8, alpha: float = 16.0, dropout: float = 0.0,
                 use_rslora: bool = False) -> None:
        super().__init__()
        out_f, in_f = base.weight.shape
        self.base, self.r, self.alpha = base, r, alpha
        self.scaling = lora_scaling(r, alpha, use_rslora)
        w = base.weight
        self.lora_A = nn.Parameter(torch.empty(r, in_f, device=w.device, dtype=torch.float32))
        self.lora_B = nn.Parameter(torch.zeros(out_f, r, device=w.device, dtype=torch.float32))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))  # peft's default init of A
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.merged = False

    @property
    def weight(self) -> torch.Tensor:
        return self.base.weight

    @property
    def bias(self) -> torch.Tensor | None:
        return getattr(self.base, "bias", None)

    def delta_weight(self) -> torch.Tensor:
        """s · B A: (out, in), the update LoRA adds to W."""
        return self.scaling * (self.lora_B @ self.lora_A)

    def low_rank(self, x: torch.Tensor) -> torch.Tensor:
        """s · B A x: (..., in) -> (..., out), without forming B A."""
        return self.scaling * F.linear(F.linear(x, self.lora_A.to(x.dtype)), self.lora_B.to(x.dtype))

    def adapter_out(self, x: torch.Tensor) -> torch.Tensor:
        """s · B A dropout(x): (..., in) -> (..., out)."""
        return self.low_rank(self.dropout(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base(x)
        return y if self.merged else y + self.adapter_out(x)

    @torch.no_grad()
    def merge(self) -> None:
        """W <- W + s B A (inference then costs nothing extra)."""
        self._check_mergeable()
        if not self.merged:
            self.base.weight += self.delta_weight().to(self.base.weight.dtype)
            self.merged = True

    def _check_mergeable(self) -> None:
        if not isinstance(self.base.weight, nn.Parameter):
            raise ValueError("the base weight is not a float parameter (quantized?): merge it "
                             "with llmlab.peft.qlora.merge_qlora instead")

    @torch.no_grad()
    def unmerge(self) -> None:
        """W <- W - s B A (back to the frozen base plus a separate adapter)."""
        if self.merged:
            self.base.weight -= self.delta_weight().to(self.base.weight.dtype)
            self.merged = False

    def extra_repr(self) -> str:
        return f"r={self.r}, alpha={self.alpha}, scaling={self.scaling:.4g}, merged={self.merged}"


def _wrappers(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if hasattr(m, "merge") and hasattr(m, "base")]


def merge(model: nn.Module) -> nn.Module:
    """Merge every adapter of ``model`` into its base weight (see ``LoRALinear.merge``)."""
    for m in _wrappers(model):
        m.merge()
    return model


def unmerge(model: nn.Module) -> nn.Module:
    """Undo :func:`merge`."""
    for m in _wrappers(model):
        m.unmerge()
    return model


def merge_and_unload(model: nn.Module) -> nn.Module:
    """Merge every adapter and put the plain base modules back: the result has the base model's
    module names and state-dict keys again (``save_model``/``to_hf`` work on it)."""
    for name, m in list(model.named_modules()):
        if m in _wrappers(model):
            m.merge()
            parent_name, _, child = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            setattr(parent, child, m.base)
    return model


def loraplus_param_groups(model: nn.Module, lr: float, ratio: float = 16.0,
                          weight_decay: float = 0.0) -> list[dict]:
    """Optimizer groups for LoRA+: B matrices at ``lr * ratio``, everything else trainable at ``lr``.

    The paper's argument: with A and B at one learning rate, feature learning in wide models is
    inefficient because B (initialised at 0) should move faster; ratio ~ 2^4 works well.
    """
    if ratio <= 0:
        raise ValueError(f"LoRA+ ratio must be > 0, got {ratio}")
    fast, slow = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (fast if name.endswith("lora_B") else slow).append(p)
    if not fast:
        raise ValueError("no LoRA B matrices among the trainable parameters; apply_lora first")
    return [{"params": slow, "lr": lr, "weight_decay": weight_decay},
            {"params": fast, "lr": lr * ratio, "weight_decay": weight_decay}]
