"""Save and load adapters only: the trainable tensors, not the frozen base model.

An adapter file is a few hundred kilobytes where the base model is gigabytes; the same base
serves many adapters (``llmlab.peft.multi_lora``). Files are safetensors with the adapter's
config in the metadata. Taught in chapter 05 (solutions/05_peft).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, safe_open, save_file
from torch import nn


def adapter_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The trainable parameters of ``model`` by name (detached copies)."""
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def load_adapter_state_dict(model: nn.Module, state: dict[str, torch.Tensor]) -> nn.Module:
    """Copy ``state`` into the matching trainable parameters of ``model`` (already adapted).

    Raises ``ValueError`` naming the keys that are missing, unexpected, or of another shape.
    """
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    missing, unexpected = sorted(set(params) - set(state)), sorted(set(state) - set(params))
    if missing or unexpected:
        raise ValueError(f"adapter does not fit the model: missing {missing[:5]}, "
                         f"unexpected {unexpected[:5]} (apply the same method and config first)")
    for n, p in params.items():
        if p.shape != state[n].shape:
            raise ValueError(f"{n}: model has {tuple(p.shape)}, adapter has {tuple(state[n].shape)}")
        with torch.no_grad():
            p.copy_(state[n])
    return model


def save_adapter(model: nn.Module, path: str | Path, config: dict | None = None) -> Path:
    """Write the trainable parameters (and ``config`` as JSON metadata) to a safetensors file."""
    path = Path(path)
    save_file({k: v.contiguous() for k, v in adapter_state_dict(model).items()}, str(path),
              metadata={"config": json.dumps(config or {})})
    return path


def load_adapter(model: nn.Module, path: str | Path) -> dict:
    """Load a file written by :func:`save_adapter` into ``model``; return its config."""
    load_adapter_state_dict(model, load_file(str(path)))
    with safe_open(str(path), "pt") as f:
        return json.loads((f.metadata() or {}).get("config", "{}"))
