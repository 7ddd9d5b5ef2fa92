"""Small helpers every chapter and layer uses: seeding, and the strict configuration dataclass."""

from __future__ import annotations

import dataclasses
import functools
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


def reject_unknown_keys(cls: type) -> type:
    """Class decorator for a configuration dataclass (apply it above ``@dataclass``): building
    it with a key it does not have raises ``ValueError(message, key)`` naming the key and the
    known ones, instead of Python's ``TypeError`` — in ``cls(**kwargs)``, in
    ``dataclasses.replace`` and in every ``from_dict``.

    Every configuration dataclass of llmlab goes through it (``tests/test_configs.py``).
    """
    if not dataclasses.is_dataclass(cls):
        raise ValueError(f"reject_unknown_keys decorates a dataclass; {cls.__name__} is not one "
                         "(put it above @dataclass)")
    init = cls.__init__
    known = sorted(f.name for f in dataclasses.fields(cls) if f.init)

    @functools.wraps(init)
    def strict_init(self, *args, **kwargs):
        unknown = sorted(set(kwargs) - set(known))
        if unknown:
            raise ValueError(f"unknown {cls.__name__} key(s) {unknown}; known: {known}",
                             unknown[0])
        init(self, *args, **kwargs)

    cls.__init__ = strict_init
    cls.__rejects_unknown_keys__ = True
    return cls


def missing_extra(modules: tuple[str, ...], extra: str, what: str) -> str | None:
    """Why ``what`` cannot run here, naming the extra to install, when one of ``modules`` is
    missing (the core install, ``pip install llmlab``, carries no notebook tooling, server or
    Triton); None when all are installed."""
    from importlib.util import find_spec

    missing = [m for m in modules if find_spec(m) is None]
    if not missing:
        return None
    return (f"{what} needs {', '.join(missing)}, which the core install does not carry: "
            f"pip install 'llmlab[{extra}]'")
