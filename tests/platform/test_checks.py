"""The instant-feedback checks: they pass right answers and explain wrong ones in words."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from llmlab import grading
from llmlab.grading.compare import explain
from llmlab.grading.warmup import masked_mean, split_heads, stable_softmax

CASES = [grading.Case(torch.randn(3, 4, generator=torch.Generator().manual_seed(0))),
         grading.Case(torch.tensor([[1000.0, 0.0]]), note="huge logits")]


def failure(fn, ref=stable_softmax, cases=CASES, **kw) -> str:
    with pytest.raises(AssertionError) as info:
        grading.check_function(fn, ref, cases, **kw)
    return str(info.value)


def test_right_answer_passes(capsys):
    grading.check_function(lambda x: torch.softmax(x, -1), stable_softmax, CASES)
    assert "✓" in capsys.readouterr().out


def test_overflow_is_diagnosed():
    msg = failure(lambda x: x.exp() / x.exp().sum(-1, keepdim=True), hint="subtract the max")
    assert "case 2 of 2 (huge logits)" in msg and "NaN" in msg and "Hint: subtract the max" in msg


def test_unsolved_says_not_implemented():
    def stub(x):
        raise NotImplementedError()
    assert "not implemented yet" in failure(stub)


def test_learner_exception_names_the_line():
    def buggy(x):
        return x.undefined_method()
    msg = failure(buggy)
    assert "AttributeError" in msg and "x.undefined_method()" in msg


def test_delegating_to_the_reference_is_blocked():
    msg = failure(lambda x: stable_softmax(x))
    assert "stable_softmax" in msg and "write yourself" in msg
    # ...but only while the check runs
    assert torch.allclose(stable_softmax(torch.zeros(2)), torch.tensor([0.5, 0.5]))


@pytest.mark.parametrize("route", [
    lambda x: x.softmax(-1),                                   # a Tensor-method namesake
    lambda x: torch.nn.functional.softmax(x, -1),              # a Python namesake
    lambda x: stable_softmax.__wrapped__(x) if hasattr(stable_softmax, "__wrapped__")
    else __import__("contextvars").Context().run(stable_softmax, x),
])
def test_named_twins_are_blocked_by_identity(route):
    msg = failure(route, block=[torch.softmax])
    assert "write yourself" in msg


def test_a_copy_made_with_getsource_is_blocked():
    import inspect

    from llmlab.grading import warmup

    ns = dict(vars(warmup))
    exec(inspect.getsource(warmup.stable_softmax), ns)
    assert "write yourself" in failure(lambda x: ns["stable_softmax"](x))


def test_block_is_scoped_to_the_piece_under_check(capsys):
    # a learner's split_heads may use llmlab's softmax: only split_heads is blocked
    def uses_other_reference(x, h):
        stable_softmax(x)
        return x.view(x.shape[0], x.shape[1], h, -1).transpose(1, 2)
    grading.check_function(uses_other_reference, split_heads, [(torch.randn(2, 3, 8), 2)])
    assert "✓" in capsys.readouterr().out


def test_lenient_mode_prints_and_does_not_raise(monkeypatch, capsys):
    monkeypatch.setenv("LLMLAB_GRADER", "0")
    grading.check_function(lambda x: x, stable_softmax, CASES)
    assert "✗" in capsys.readouterr().out


@pytest.mark.parametrize("got, expected, words", [
    (torch.zeros(3, 2), torch.zeros(2, 3), "transpose"),
    (torch.zeros(4), torch.zeros(4, 1), "keepdim"),
    (torch.zeros(6), torch.zeros(2, 3), "reshape"),
    (torch.ones(2, 2, dtype=torch.float64), torch.ones(2, 2), "dtype"),
    (torch.arange(6.0).view(2, 3) * 2, torch.arange(6.0).view(2, 3), "constant 2"),
    (torch.tensor([[1.0, 2.0], [3.0, 4.0]]).T, torch.tensor([[1.0, 2.0], [3.0, 4.0]]), "transposed"),
    (-torch.arange(1.0, 5.0), torch.arange(1.0, 5.0), "opposite sign"),
    (torch.arange(4.0) + 3, torch.arange(4.0), "shifted"),
    (np.zeros(2), torch.zeros(2), "NumPy"),
    ([1, 2], [1, 2, 3], "3 items"),
    ({"a": 1}, {"a": 1, "b": 2}, "missing keys"),
    ({"a": 1.0}, {"a": 1.5}, "['a']"),
    (0.5, 2, "whole number"),
    (float("nan"), 1.0, "NaN"),
    ("abc", "abd", "expected 'abd'"),
])
def test_explain_names_the_mistake(got, expected, words):
    msg = explain(got, expected)
    assert msg is not None and words in msg


@pytest.mark.parametrize("got, expected", [
    (torch.ones(3) + 1e-7, torch.ones(3)),
    ([1, (2.0, "x")], [1, (2.0 + 1e-9, "x")]),
    ({"k": torch.arange(3)}, {"k": torch.arange(3)}),
    (np.ones(2), np.ones(2)),
])
def test_explain_accepts_matches(got, expected):
    assert explain(got, expected) is None


def test_check_module_compares_outputs_and_gradients(capsys):
    class Ref(torch.nn.Module):
        def __init__(self, d: int):
            super().__init__()
            self.w = torch.nn.Parameter(torch.randn(d))

        def forward(self, x):
            return x * self.w

    class Mine(torch.nn.Module):
        def __init__(self, d: int):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(d))

        def forward(self, x):
            return self.w * x

    class Detached(Mine):
        def forward(self, x):
            return x * self.w.detach() + 0 * self.w.sum()

    inputs = [grading.Case(torch.randn(2, 4))]
    grading.check_module(Mine, Ref, dict(d=4), inputs)
    assert "✓" in capsys.readouterr().out
    with pytest.raises(AssertionError, match="gradient of `w`"):
        grading.check_module(Detached, Ref, dict(d=4), inputs)
    with pytest.raises(AssertionError, match="write yourself"):  # inheriting the reference
        grading.check_module(type("Inherits", (Ref,), {}), Ref, dict(d=4), inputs)


def test_check_module_reports_parameter_names():
    class Ref(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.ones(2))

    class Other(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.scale = torch.nn.Parameter(torch.ones(2))

    with pytest.raises(AssertionError, match="missing keys"):
        grading.check_module(Other, Ref, {}, [])


def test_warmup_references():
    x = torch.randn(2, 5, 6)
    assert torch.allclose(stable_softmax(x), torch.softmax(x, -1))
    assert split_heads(x, 3).shape == (2, 3, 5, 2)
    assert torch.equal(split_heads(x, 3)[:, 1], x[..., 2:4])
    with pytest.raises(ValueError, match="divisible"):
        split_heads(x, 4)
    mask = torch.tensor([[1, 1, 0, 0, 0], [0, 0, 0, 0, 0]]).bool()
    out = masked_mean(x, mask)
    assert torch.allclose(out[0], x[0, :2].mean(0)) and torch.equal(out[1], torch.zeros(6))


def test_library_code_does_not_import_the_courseware():
    from pathlib import Path

    import llmlab

    root = Path(llmlab.__file__).parent
    offenders = [str(p.relative_to(root)) for p in root.rglob("*.py")
                 if p.parent.name != "grading" and p.name != "cli.py" and p != root / "__init__.py"
                 and ("llmlab.grading" in p.read_text() or "from llmlab import grading" in p.read_text()
                      or "@reference" in p.read_text())]
    assert offenders == []


def test_an_input_changed_in_place_is_caught():
    def in_place(x):
        x.sub_(x.amax(-1, keepdim=True))
        return x.exp() / x.exp().sum(-1, keepdim=True)
    msg = failure(in_place)
    assert "the arguments after the call['x']" in msg and "changed its input in place" in msg


def test_an_in_place_spec_must_be_followed():
    def scale_(x, factor):
        """Multiply x by factor in place."""
        x.mul_(factor)

    def also_in_place(x, factor):
        x.copy_(x * factor)

    def leaves_x(x, factor):
        return None
    cases = [grading.Case(torch.ones(3), 2.0)]
    grading.check_function(also_in_place, scale_, cases)
    msg = failure(leaves_x, scale_, cases)
    assert "the arguments after the call['x']" in msg
    assert "The spec changes this argument in place" in msg


def test_a_callable_the_guard_cannot_see_is_refused_when_listed():
    with pytest.raises(TypeError, match="numpy.exp cannot be blocked.*ufunc"):
        grading.check_function(lambda x: x, lambda x: x, CASES, block=[np.exp])
