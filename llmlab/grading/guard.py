"""Mark llmlab's own implementations as references, and block them while a learner's code runs.

Every exercise in the book asks for a piece llmlab already implements. While a check runs the
learner's code, the reference of the piece under test raises :class:`ReferenceBlocked`, so an
answer that just calls llmlab cannot pass. Blocking is scoped (a ``ContextVar``): only the pieces
a check names are blocked, and only inside that check, so a learner may still use llmlab's other
components (a transformer block may call llmlab's RMSNorm).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterable, Iterator
from contextvars import ContextVar
from typing import Any, TypeVar

import torch

T = TypeVar("T")

_BLOCKED: ContextVar[frozenset[str]] = ContextVar("llmlab_blocked_references", default=frozenset())
_KEY = "__llmlab_reference__"


class ReferenceBlocked(RuntimeError):
    """Raised when code under a check calls llmlab's reference for the piece being checked."""


def reference_key(obj: Any) -> str | None:
    """The key a ``@reference`` object was registered under, or None for other objects."""
    return getattr(obj, _KEY, None)


def _raise_if_blocked(key: str) -> None:
    if torch.compiler.is_compiling():  # checks never run compiled code; keep graphs whole
        return
    if key in _BLOCKED.get():
        raise ReferenceBlocked(
            f"your code called llmlab's own `{key}`, the very piece this exercise asks you to "
            "write. Implement it yourself (you may use torch and earlier pieces)."
        )


def reference(obj: T) -> T:
    """Decorator: mark a function or class as llmlab's reference implementation of an exercise.

    A function is wrapped; a class has its ``__init__`` and ``forward`` (when defined) wrapped, so
    neither constructing nor calling it works while it is blocked.
    """
    key = f"{obj.__module__}.{obj.__qualname__}"
    if isinstance(obj, type):
        for name in ("__init__", "forward"):
            method = obj.__dict__.get(name)
            if method is not None:
                setattr(obj, name, _wrap(method, key))
        setattr(obj, _KEY, key)
        return obj
    wrapped = _wrap(obj, key)  # type: ignore[arg-type]
    setattr(wrapped, _KEY, key)
    return wrapped  # type: ignore[return-value]


def _wrap(fn: Callable[..., Any], key: str) -> Callable[..., Any]:
    @functools.wraps(fn)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        _raise_if_blocked(key)
        return fn(*args, **kwargs)

    return guarded


@contextlib.contextmanager
def blocked(references: Iterable[Any]) -> Iterator[None]:
    """Within the block, calling any of ``references`` (``@reference`` objects) raises."""
    keys = {k for k in map(reference_key, references) if k is not None}
    token = _BLOCKED.set(_BLOCKED.get() | keys)
    try:
        yield
    finally:
        _BLOCKED.reset(token)
