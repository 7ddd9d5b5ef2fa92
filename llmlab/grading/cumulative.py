"""Cumulative chapters: later cells run the learner's own function once it passes.

``prefer_yours(yours, ours, cases)`` tries the learner's function on a few cases against
llmlab's; when it runs and agrees it is returned (and the chapter trains, caches and serves with
it), otherwise llmlab's is returned with a visible note saying why. It never raises, also under
the grader, so an unsolved exercise costs only its own points. Taught in chapter 00
(solutions/00_intro); used by every chapter whose exercises build on each other.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from llmlab.grading.checks import Case, run_learner
from llmlab.grading.compare import explain

F = TypeVar("F", bound=Callable[..., Any])
MAX_REASON = 140


def _failure(probe_yours: Callable[..., Any], probe_ours: Callable[..., Any], cases: Sequence[Any],
             block: Sequence[Any], atol: float, rtol: float) -> str | None:
    for i, case in enumerate(Case.of(c) for c in cases):
        args, kwargs = case.copy()
        expected = probe_ours(*args, **kwargs)
        args, kwargs = case.copy()
        got, error = run_learner(probe_yours, args, kwargs, block)
        msg = error or explain(got, expected, atol, rtol)
        if msg:
            return f"case {i + 1}: {msg}"
    return None


def prefer_yours(yours: F, ours: F, cases: Sequence[Any], *, name: str | None = None,
                 probe: Callable[[Callable[..., Any]], Callable[..., Any]] | None = None,
                 block: Sequence[Any] = (), atol: float = 1e-5, rtol: float = 1e-4) -> F:
    """``yours`` if it agrees with ``ours`` on ``cases``, else ``ours``; prints which is used.

    ``probe`` turns a function into what is compared (e.g. run one training step and return
    the loss and the new weights); by default the function itself. ``ours`` and ``block`` are
    blocked while ``yours`` runs, so delegating to llmlab does not count as passing.
    """
    name = name or getattr(ours, "__name__", "this piece")
    probe = probe or (lambda f: f)
    failure = _failure(probe(yours), probe(ours), cases, [ours, *block], atol, rtol)
    if failure is None:
        print(f"→ from here on the chapter uses your `{name}`.")
        return yours
    reason = failure if len(failure) <= MAX_REASON else failure[: MAX_REASON - 3] + "..."
    print(f"→ from here on the chapter uses llmlab's `{name}` (yours is not passing yet: {reason})")
    return ours


__all__ = ["prefer_yours"]
