"""Instant-feedback checks for the visible and hidden test cells of every exercise.

A check runs the learner's code on chosen cases, compares with llmlab's reference (the reference
and every twin named in ``block=[...]`` are blocked while the learner's code runs; see
:mod:`llmlab.grading.guard`) and reports in words. It prints a one-line verdict; on a failure it
prints what went wrong and raises ``AssertionError`` when the environment variable
``LLMLAB_GRADER=1`` is set (nbval and the notebook build set it), so the cell fails while a
learner's "Run all" carries on past an unsolved exercise.

This is the feedback a learner sees. Scores are not decided here: the grader
(:mod:`llmlab.grading.autograde`) runs the same calls in two other processes — the chapter's
authored notebook records the cases and the expected results, a judge process records what the
learner's code returns on those cases — and compares them itself. While either runs, the checks
hand their arguments to that process's recorder (``_RECORDER``) instead of comparing.
"""

from __future__ import annotations

import copy
import inspect
import os
import traceback
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from llmlab.grading.compare import explain, known_mistake, match_mistake, short
from llmlab.grading.guard import ReferenceBlocked, blocked, keys_for

GRADER_ENV = "LLMLAB_GRADER"
_RECORDER: Any = None  # set only by the grader's reference run and judge processes


class Case:
    """One input to a check: positional and keyword arguments, and a note on what it exercises."""

    def __init__(self, *args: Any, note: str = "", **kwargs: Any) -> None:
        self.args, self.kwargs, self.note = args, kwargs, note

    @classmethod
    def of(cls, case: Any) -> Case:
        if isinstance(case, Case):
            return case
        return cls(*case) if isinstance(case, tuple) else cls(case)

    def copy(self) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """Fresh copies, so an in-place edit by one side cannot change what the other sees."""
        return copy.deepcopy(self.args), copy.deepcopy(self.kwargs)

    def describe(self, index: int, total: int) -> str:
        label = f"case {index + 1} of {total}"
        return f"{label} ({self.note})" if self.note else label


def _strict() -> bool:
    return os.environ.get(GRADER_ENV, "") == "1"


def failure_text(name: str, failure: str, hint: str | None) -> str:
    if failure.startswith(f"{name}: "):  # check_value's explanation already names the value
        failure = failure[len(name) + 2:]
    text = f"✗ {name}: {failure}"
    if hint:
        text += f"\n  Hint: {hint}"
    return text


def _report(name: str, failure: str | None, passed: int, hint: str | None) -> None:
    if failure is None:
        print(f"✓ {name}: {'all ' if passed > 1 else ''}{passed} check{'s' if passed > 1 else ''} passed.")
        return
    text = failure_text(name, failure, hint)
    print(text)
    if _strict():
        raise AssertionError(text)


def _describe_error(exc: BaseException) -> str:
    if isinstance(exc, NotImplementedError):
        return ("not implemented yet: replace `raise NotImplementedError()` with your code "
                "between the solution markers, then run the cell again.")
    if isinstance(exc, ReferenceBlocked):
        return str(exc)
    if isinstance(exc.__cause__, ReferenceBlocked):  # re-raised by a wrapper (Triton's interpreter)
        return str(exc.__cause__)
    frames = traceback.extract_tb(exc.__traceback__)
    where = ""
    for frame in reversed(frames):
        if "llmlab/grading" not in frame.filename.replace("\\", "/") and \
                not frame.filename.startswith("<llmlab"):
            where = f" at line {frame.lineno}: `{(frame.line or '').strip()}`"
            break
    return f"raised {type(exc).__name__}: {exc}{where}."


def _plain(value: Any) -> bool:
    """A tensor, an array, or a container of plain values: what a check can compare exactly."""
    if value is None or isinstance(value, (bool, int, float, str, bytes, torch.Tensor,
                                           np.ndarray)):
        return True
    if isinstance(value, (list, tuple, set, frozenset)):
        return all(map(_plain, value))
    if isinstance(value, dict):
        return all(_plain(k) and _plain(v) for k, v in value.items())
    return False


def mutable_inputs(ref: Callable[..., Any], args: Sequence[Any],
                   kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """The arguments a call could change in place (tensors, arrays, and lists, tuples, dicts,
    sets of plain values), by the reference's parameter names: after a call, the learner's must
    equal the reference's, so a function that edits its input in place (or fails to, where the
    spec says it should) is caught, not only one that returns a wrong result."""
    try:
        params = [p.name for p in inspect.signature(ref).parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    except (TypeError, ValueError):
        params = []
    named = {(params[i] if i < len(params) else f"argument {i + 1}"): a for i, a in enumerate(args)}
    named.update(kwargs)
    return {k: v for k, v in named.items()
            if isinstance(v, (torch.Tensor, np.ndarray, list, tuple, dict, set)) and _plain(v)}


def inputs_failure(got: Any, expected: Any, mutates: bool, atol: float,
                   rtol: float) -> str | None:
    """None when the arguments after the learner's call match the reference's; else why not."""
    msg = explain(got, expected, atol, rtol, path="the arguments after the call")
    if msg is None:
        return None
    if mutates:
        return f"{msg} The spec changes this argument in place: write the result into it."
    return (f"{msg} Your function changed its input in place; the spec leaves its inputs as "
            "they were (work on a copy, or use out-of-place operations: `x - m`, not "
            "`x.sub_(m)`).")


def changes_inputs(ref: Callable[..., Any], case: Case, after: dict[str, Any]) -> bool:
    """Whether the reference's call on ``case`` left its arguments as ``after`` (changed)."""
    return explain(after, mutable_inputs(ref, *case.copy()), 0.0, 0.0) is not None


def run_learner(fn: Callable[..., Any], args: Sequence[Any], kwargs: dict[str, Any],
                block: Sequence[Any]) -> tuple[Any, str | None]:
    """Call the learner's ``fn`` with the references blocked; (result, None) or (None, error)."""
    got, exc = _call_learner(fn, args, kwargs, block)
    return got, (None if exc is None else _describe_error(exc))


def _call_learner(fn: Callable[..., Any], args: Sequence[Any], kwargs: dict[str, Any],
                  block: Sequence[Any]) -> tuple[Any, Exception | None]:
    try:
        with blocked(block):
            return fn(*args, **kwargs), None
    except Exception as exc:  # a learner's bug of any kind is feedback, not a crash
        return None, exc


def raises_failure(expected: str, error: str | None, error_type: str | None, got: Any) -> str | None:
    """None when the learner's call raised ``expected`` (an exception's class name), as the
    reference did on this case (bad input must raise); else what happened instead."""
    if error is None:
        return f"expected it to raise {expected}, but it returned {short(got)}."
    if error_type == expected:
        return None
    if error.startswith("not implemented yet"):
        return error
    return f"expected it to raise {expected}, but it {error}"


def check_function(fn: Callable[..., Any], ref: Callable[..., Any], cases: Sequence[Any], *,
                   atol: float = 1e-5, rtol: float = 1e-4, hint: str | None = None,
                   name: str | None = None, block: Sequence[Any] = (),
                   mistakes: Mapping[str, Callable[..., Any]] | None = None) -> None:
    """Compare ``fn`` with the reference ``ref`` on every case; explain the first mismatch.

    ``cases``: ``Case`` objects (or tuples of positional arguments). A case on which ``ref``
    raises expects ``fn`` to raise the same exception class (bad input must raise).
    ``block``: more references to block besides ``ref`` (e.g. a helper the exercise also asks
    for). ``mistakes``: known wrong variants with ``fn``'s signature,
    ``{"RoPE on interleaved pairs": fn, ...}`` (a chapter's catalogue gives them:
    ``CATALOGUE.mistakes(exercise)``); a mismatch that equals one is named, here and by the
    grader, in the same words.
    """
    name = name or getattr(fn, "__name__", "your function")
    if _RECORDER is not None:
        return _RECORDER.check_function(fn, ref, cases, atol=atol, rtol=rtol, hint=hint, name=name,
                                        block=block, mistakes=mistakes)
    keys_for([ref, *block])  # a callable the guard cannot block is the author's error, raised here
    cases = [Case.of(c) for c in cases]
    for i, case in enumerate(cases):
        ref_args, ref_kwargs = case.copy()
        try:
            expected, raised = ref(*ref_args, **ref_kwargs), None
        except Exception as exc:  # the case is bad input: the learner's code must raise too
            expected, raised = None, type(exc).__name__
        args, kwargs = case.copy()
        got, exc = _call_learner(fn, args, kwargs, [ref, *block])
        error = None if exc is None else _describe_error(exc)
        where = case.describe(i, len(cases))
        if raised:
            msg = raises_failure(raised, error, type(exc).__name__ if exc else None, got)
            if msg:
                return _report(name, f"{where}: {msg}", i, hint)
            continue
        if error:
            return _report(name, f"{where}: {error}", i, hint)
        msg = explain(got, expected, atol, rtol)
        if msg:
            if mistakes:
                msg += known_mistake(got, mistakes, *case.copy(), atol, rtol)
            return _report(name, f"{where}: {msg}", i, hint)
        after = mutable_inputs(ref, ref_args, ref_kwargs)
        msg = inputs_failure(mutable_inputs(ref, args, kwargs), after,
                             changes_inputs(ref, case, after), atol, rtol)
        if msg:
            return _report(name, f"{where}: {msg}", i, hint)
    return _report(name, None, len(cases), hint)


def check_prediction(fn: Callable[[], Any], expected: Any, *, what: str = "your prediction",
                     atol: float = 1e-5, rtol: float = 1e-4, hint: str | None = None,
                     mistakes: Mapping[str, Callable[[], Any]] | None = None) -> None:
    """A predict-first question: call the learner's ``fn()`` (it returns the number, or a tuple
    or dict of numbers, worked out before the demo shows it) and compare it with ``expected``.

    A wrong number fails and an unanswered question prints its ✗ without stopping the chapter
    (``fn`` is called inside the check, not in the cell). ``mistakes``: the wrong answers of the
    chapter's catalogue, ``{"bytes, not KiB": fn, ...}``, each a function with no arguments.
    """
    def ref() -> Any:
        return expected

    check_function(fn, ref, [Case(note=what)], atol=atol, rtol=rtol, hint=hint,
                   name=getattr(fn, "__name__", what), mistakes=mistakes)


def check_module(cls: type[torch.nn.Module], ref_cls: type[torch.nn.Module], init: dict[str, Any],
                 inputs: Sequence[Any], *, atol: float = 1e-5, rtol: float = 1e-4,
                 hint: str | None = None, name: str | None = None, grads: bool = True,
                 seed: int = 0, block: Sequence[Any] = (),
                 mistakes: Mapping[str, type[torch.nn.Module]] | None = None) -> None:
    """Build the learner's module and the reference with ``init``, give the learner the
    reference's weights, and compare outputs (and, with ``grads``, parameter gradients).
    ``mistakes``: known wrong classes, ``{"label": WrongBlock}``, built and loaded the same way;
    an output that equals one's is named."""
    name = name or getattr(cls, "__name__", "your module")
    if _RECORDER is not None:
        return _RECORDER.check_module(cls, ref_cls, init, inputs, atol=atol, rtol=rtol, hint=hint,
                                      name=name, grads=grads, seed=seed, block=block,
                                      mistakes=mistakes)
    keys_for([ref_cls, *block])
    torch.manual_seed(seed)
    ref = ref_cls(**init)
    learner, error = run_learner(cls, (), dict(init), [ref_cls, *block])
    if error:
        return _report(name, f"constructing it {error}", 0, hint)
    ref_shapes = {k: tuple(v.shape) for k, v in ref.state_dict().items()}
    got_shapes = {k: tuple(v.shape) for k, v in learner.state_dict().items()}
    if ref_shapes != got_shapes:
        msg = explain(got_shapes, ref_shapes, path="its parameters (name -> shape)")
        return _report(name, f"{msg} Name and shape them as the docstring says.", 0, hint)
    learner.load_state_dict(ref.state_dict())
    cases = [Case.of(c) for c in inputs]
    for i, case in enumerate(cases):
        where = case.describe(i, len(cases))
        args, kwargs = case.copy()
        expected = ref(*args, **kwargs)
        args, kwargs = case.copy()
        got, error = run_learner(learner, args, kwargs, [ref_cls, *block])
        if error:
            return _report(name, f"{where}: forward {error}", i, hint)
        msg = explain(got, expected, atol, rtol, path="the output")
        if msg:
            if mistakes:
                variants = module_mistakes(mistakes, init, ref.state_dict(), seed)
                msg += known_mistake(got, variants, *case.copy(), atol, rtol)
            return _report(name, f"{where}: {msg}", i, hint)
        if grads and isinstance(expected, torch.Tensor) and expected.requires_grad:
            msg = _compare_grads(learner, ref, got, expected, atol, rtol)
            if msg:
                return _report(name, f"{where}: {msg}", i, hint)
    return _report(name, None, len(cases), hint)


def module_mistakes(mistakes: Mapping[str, type[torch.nn.Module]], init: dict[str, Any],
                    state: dict[str, Any], seed: int) -> dict[str, Callable[..., Any]]:
    """Each wrong class built with ``init`` and the reference's weights, as a callable (those
    that cannot be built or loaded are left out)."""
    out = {}
    for label, wrong_cls in mistakes.items():
        try:
            torch.manual_seed(seed)
            module = wrong_cls(**copy.deepcopy(init))
            module.load_state_dict(state)
        except Exception:  # a variant that cannot be built names nothing
            continue
        out[label] = module
    return out


def param_grads(module: torch.nn.Module, out: torch.Tensor) -> dict[str, torch.Tensor | None]:
    """Gradients of a fixed random projection of ``out`` for every parameter of ``module``."""
    weight = torch.randn(out.shape, generator=torch.Generator().manual_seed(1))
    module.zero_grad()
    (out * weight).sum().backward()
    return {name: p.grad for name, p in module.named_parameters()}


def explain_grads(got: dict[str, Any], expected: dict[str, Any], atol: float, rtol: float) -> str | None:
    for pname, q in expected.items():
        if q is None:
            continue
        msg = explain(got.get(pname), q, atol * 10, rtol * 10, path=f"the gradient of `{pname}`")
        if msg:
            return msg + " (the forward matches: is something detached or computed in-place?)"
    return None


def _compare_grads(learner: torch.nn.Module, ref: torch.nn.Module, got: torch.Tensor,
                   expected: torch.Tensor, atol: float, rtol: float) -> str | None:
    return explain_grads(param_grads(learner, got), param_grads(ref, expected), atol, rtol)


def check_value(got: Any, expected: Any, *, what: str = "the value", atol: float = 1e-5,
                rtol: float = 1e-4, hint: str | None = None,
                mistakes: Mapping[str, Any] | None = None) -> None:
    """Compare a value the learner computed with the expected one. ``mistakes``: what known
    wrong answers give, ``{"label": value}``; a mismatch that equals one is named."""
    if _RECORDER is not None:
        return _RECORDER.check_value(got, expected, what=what, atol=atol, rtol=rtol, hint=hint,
                                     mistakes=mistakes)
    msg = explain(got, expected, atol, rtol, path=what)
    if msg and mistakes:
        msg += match_mistake(got, mistakes, atol, rtol)
    return _report(what, msg, 1, hint)


def expect(condition: bool, message: str, *, what: str = "check") -> None:
    """A plain condition, with the message a learner sees when it is false."""
    if _RECORDER is not None:
        return _RECORDER.expect(condition, message, what=what)
    return _report(what, None if condition else message, 1, None)


__all__ = ["Case", "check_function", "check_module", "check_prediction", "check_value", "expect",
           "failure_text", "raises_failure", "short"]
