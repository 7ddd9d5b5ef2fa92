"""Small helpers every chapter uses: seeding and locating the repository's files."""

from __future__ import annotations

import os
import random

import numpy as np
import torch


def seed_all(seed: int = 0) -> torch.Generator:
    """Seed Python, NumPy and torch so a chapter's outputs repeat run to run.

    Returns a ``torch.Generator`` seeded with ``seed`` for code that wants its own stream.
    """
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    os.environ.setdefault("PYTHONHASHSEED", str(seed))
    return torch.Generator().manual_seed(seed)
