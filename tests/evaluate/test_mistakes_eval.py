"""Chapter 11's catalogue of wrong answers: every catalogued variant of an exercise fails that
exercise's visible check *and* its hidden check, and the visible check names it by its label.

The check cells are read from the chapter's script and run with ``check_function`` recording its
arguments; each variant is then compared with the reference case by case, exactly as the check
compares a learner's answer (``explain``, then ``known_mistake`` on the first failing case).
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path

import pytest

from llmlab import grading
from llmlab.grading.compare import explain, known_mistake

pytestmark = pytest.mark.slow  # runs the chapter's checks on every catalogued variant

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "solutions" / "11_eval" / "11_eval.py"


@pytest.fixture(scope="module")
def checks() -> dict[str, dict]:
    """exercise id -> {"check": recorded call, "hidden": recorded call}."""
    sys.path.insert(0, str(ROOT / "tools"))
    import notebooks

    nb = notebooks.from_script(SCRIPT)
    code = [c for c in nb.cells if c.cell_type == "code"]
    namespace: dict = {}
    exec(compile(code[0].source, "setup", "exec"), namespace)  # imports, the book model, the suite
    recorded: dict[str, dict] = {}
    real = grading.check_function
    for cell in code:
        grade_id = cell.metadata.get("nbgrader", {}).get("grade_id") or ""
        exercise, _, kind = grade_id.partition("__")
        if not exercise:
            continue
        calls: list = []
        grading.check_function = functools.partial(_record, calls)
        try:
            exec(compile(cell.source, grade_id, "exec"), namespace)
        finally:
            grading.check_function = real
        if kind:
            assert len(calls) == 1, f"{grade_id}: one check_function per check cell"
            recorded.setdefault(exercise, {})[kind] = calls[0]
    return recorded


def _record(calls: list, fn, ref, cases, **kw) -> None:
    calls.append((fn, ref, list(cases), kw))


def first_failure(fn, ref, cases, kw) -> tuple[int, object, tuple, dict] | None:
    """The first case on which ``fn`` differs from ``ref``, as the check decides it."""
    for i, case in enumerate(cases):
        case = grading.Case.of(case)
        args, kwargs = case.copy()
        expected = ref(*args, **kwargs)
        args, kwargs = case.copy()
        try:
            got = fn(*args, **kwargs)
        except Exception:
            return i, None, args, kwargs
        if explain(got, expected, kw.get("atol", 1e-5), kw.get("rtol", 1e-4)):
            return i, got, *case.copy()
    return None


def test_every_exercise_has_a_catalogue_of_at_least_two(checks):
    assert len(checks) >= 8, sorted(checks)
    for exercise, calls in checks.items():
        assert set(calls) == {"check", "hidden"}, exercise
        mistakes = calls["check"][3].get("mistakes") or {}
        assert len(mistakes) >= 2, f"{exercise}: {len(mistakes)} catalogued wrong answers"


def test_each_wrong_answer_fails_both_checks_and_is_named(checks):
    for exercise, calls in checks.items():
        _, ref, cases, kw = calls["check"]
        _, hidden_ref, hidden_cases, hidden_kw = calls["hidden"]
        for label, variant in kw["mistakes"].items():
            failure = first_failure(variant, ref, cases, kw)
            assert failure is not None, f"{exercise}: the visible check passes {label!r}"
            _, got, args, kwargs = failure
            if got is not None:
                named = known_mistake(got, kw["mistakes"], args, kwargs, kw.get("atol", 1e-5),
                                      kw.get("rtol", 1e-4))
                assert label in named, f"{exercise}: {label!r} is not named ({named!r})"
            assert first_failure(variant, hidden_ref, hidden_cases, hidden_kw) is not None, \
                f"{exercise}: the hidden check passes {label!r}"


def test_the_solutions_pass_both_checks(checks):
    for exercise, calls in checks.items():
        for kind, (fn, ref, cases, kw) in calls.items():
            assert first_failure(fn, ref, cases, kw) is None, f"{exercise} {kind}"
