"""Find modules by name pattern, swap them for wrapped versions, freeze the rest.

Every parameter-efficient method of this package is "freeze the base model, then put a small
trainable piece next to some of its modules". This file is the one place that walks the module
tree: ``targets`` picks module names, ``replace_modules`` swaps each for ``wrap(name, module)``.
Taught in chapter 05 (solutions/05_peft).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable

import torch
from torch import nn

from llmlab.nn import Linear

LINEAR_TYPES = (Linear, nn.Linear)


def name_matches(name: str, patterns: Iterable[str]) -> bool:
    """True when ``name`` is a pattern, ends with ``"." + pattern``, or fully matches it as a regex.

    ``"q_proj"`` matches ``"blocks.0.attn.q_proj"``; ``r"blocks\\.[01]\\..*_proj"`` matches the
    projections of the first two blocks (the rules of ``peft``'s ``target_modules``).
    """
    for p in patterns:
        if name == p or name.endswith("." + p) or re.fullmatch(p, name):
            return True
    return False


def is_kind(module: nn.Module, kinds: tuple[type, ...] | None) -> bool:
    """``module`` is of a type in ``kinds`` (None: any). A module class that declares
    ``linear_like = True`` (a quantized linear, ``llmlab.peft.qlora.NF4Linear``) counts as linear."""
    if kinds is None or isinstance(module, kinds):
        return True
    return Linear in kinds and getattr(type(module), "linear_like", False)


def targets(model: nn.Module, patterns: Iterable[str],
            kinds: tuple[type, ...] | None = LINEAR_TYPES) -> list[str]:
    """Names of the modules of ``model`` matching ``patterns`` (and of a type in ``kinds``)."""
    patterns = [patterns] if isinstance(patterns, str) else list(patterns)
    return [n for n, m in model.named_modules()
            if n and name_matches(n, patterns) and is_kind(m, kinds)]


def replace_modules(model: nn.Module, patterns: Iterable[str],
                    wrap: Callable[[str, nn.Module], nn.Module],
                    kinds: tuple[type, ...] | None = LINEAR_TYPES) -> list[str]:
    """Replace every matching module by ``wrap(name, module)`` in place; return the names.

    Raises ``ValueError`` when nothing matches (a typo in a pattern would otherwise train nothing).
    """
    names = targets(model, patterns, kinds)
    if not names:
        kinds_txt = "any type" if kinds is None else "/".join(k.__name__ for k in kinds)
        raise ValueError(f"no module of {kinds_txt} matches {list(patterns)}; module names look "
                         f"like {[n for n, _ in model.named_modules() if n][:6]}")
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, wrap(name, getattr(parent, child)))
    return names


def freeze(model: nn.Module) -> nn.Module:
    """Set ``requires_grad=False`` on every parameter; return the model."""
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def count_trainable(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts, shared tensors once."""
    seen: dict[int, torch.Tensor] = {id(p): p for p in model.parameters()}
    total = sum(p.numel() for p in seen.values())
    return sum(p.numel() for p in seen.values() if p.requires_grad), total
