"""``prefer_yours`` (later cells use a passing learner function) and named known mistakes."""

import pytest
import torch

from llmlab import grading


def _ours(x: torch.Tensor) -> torch.Tensor:
    return x.softmax(-1)


OURS = _ours


def test_a_passing_function_is_used(capsys):
    def yours(x):
        return torch.exp(x) / torch.exp(x).sum(-1, keepdim=True)

    assert grading.prefer_yours(yours, _ours, [grading.Case(torch.randn(3, 4))]) is yours
    assert "uses your `_ours`" in capsys.readouterr().out


@pytest.mark.parametrize("yours, why", [
    (lambda x: (_ for _ in ()).throw(NotImplementedError()), "not implemented"),
    (lambda x: x, "values differ"),
    (lambda x: OURS(x), "write yourself"),  # delegating to the reference does not count
])
def test_a_failing_function_falls_back_with_a_note(monkeypatch, capsys, yours, why):
    monkeypatch.setenv("LLMLAB_GRADER", "1")  # never raises, even under the grader
    ours = OURS
    assert grading.prefer_yours(yours, ours, [grading.Case(torch.randn(2, 3))], name="softmax") is ours
    out = capsys.readouterr().out
    assert "uses llmlab's `softmax`" in out and why in out


def test_probe_compares_what_the_function_produces(capsys):
    def step(xs):
        xs.append(1)

    probe = lambda f: lambda xs: (f(xs), xs)[1]  # noqa: E731
    assert grading.prefer_yours(step, lambda xs: xs.append(1), [grading.Case([0])], probe=probe) is step
    assert grading.prefer_yours(lambda xs: None, step, [grading.Case([0])], probe=probe) is step


def test_a_known_mistake_is_named(monkeypatch):
    monkeypatch.setenv("LLMLAB_GRADER", "1")

    def ref(x):
        return x.cumsum(-1)

    def wrong(x):
        return x.flip(-1).cumsum(-1).flip(-1)

    with pytest.raises(AssertionError, match="exactly what this known mistake gives: a reversed cumsum"):
        grading.check_function(wrong, ref, [grading.Case(torch.arange(4.0))],
                               mistakes={"a reversed cumsum": wrong, "x itself": lambda x: x})
    with pytest.raises(AssertionError) as err:  # another wrong answer names no mistake
        grading.check_function(lambda x: x * 0, ref, [grading.Case(torch.arange(4.0))],
                               mistakes={"a reversed cumsum": wrong})
    assert "exactly what" not in str(err.value)
