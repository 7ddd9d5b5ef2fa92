"""Atomic checkpoints: write to a temporary file in the same folder, fsync, then rename.

``os.replace`` is atomic on POSIX and Windows, so a crash mid-save leaves the previous
checkpoint intact rather than a truncated file. What goes in is everything that decides the
continuation: weights, optimizer moments and step counts, the data sampler's RNG state, the
global RNG state, the step and the log — so a resumed run is bit-identical to one that never
stopped. Taught in chapter 02 (solutions/02_gpt).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch


def save_checkpoint(state: dict[str, Any], path: str | Path) -> Path:
    """torch.save ``state`` to ``path`` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Inverse of ``save_checkpoint`` (tensors on CPU)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    return torch.load(path, map_location="cpu", weights_only=False)
