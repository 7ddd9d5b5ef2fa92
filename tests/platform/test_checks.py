"""The instant-feedback checks: they pass right answers and explain wrong ones in words."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from llmlab import grading
from llmlab.grading.compare import explain
from llmlab_book.ch00_intro import masked_mean, split_heads, stable_softmax

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

    from llmlab_book import ch00_intro as warmup

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


# ------------------------------------------------------------------ diagnoses that are true

MASKED = torch.tensor([[0.5, -float("inf"), 1.0, -float("inf")]])


@pytest.mark.parametrize("got, expected, words", [
    (torch.tensor([1.0, float("nan")]), torch.tensor([1.0, 2.0]), "overflows"),
    (torch.tensor([1.0, float("inf")]), torch.tensor([1.0, 2.0]), "overflows"),
    (MASKED.clone().index_fill_(1, torch.tensor([0]), -float("inf")), MASKED,
     "1 are ±inf (masked) where finite values were expected (first at index (0, 0))"),
    (MASKED.nan_to_num(neginf=-1e9), MASKED, "are finite where ±inf (masked) was expected"),
    (torch.arange(1.0, 7.0) * 0.125, torch.arange(1.0, 7.0), "times a constant 0.125"),
    (torch.arange(1.0, 7.0) + 3, torch.arange(1.0, 7.0), "shifted by a constant 3"),
    (torch.tensor([[1.0, 2.0], [3.0, 4.0]]).T, torch.tensor([[1.0, 2.0], [3.0, 4.0]]), "transposed"),
    (-torch.arange(1.0, 5.0), torch.arange(1.0, 5.0), "opposite sign"),
    (2.0, 1.0, "ratio got/expected = 2"),
])
def test_a_diagnosis_is_printed_when_it_is_true(got, expected, words):
    msg = explain(got, expected)
    assert msg is not None and words in msg, msg


@pytest.mark.parametrize("got, expected, absent", [
    # a mask off by one entry is a mask that differs, not an overflow
    (MASKED.clone().index_fill_(1, torch.tensor([0]), -float("inf")), MASKED, "overflow"),
    # unrounded scales: a tiny relative error is not "times a constant 1"
    (torch.arange(1.0, 7.0) * 1.0003, torch.arange(1.0, 7.0), "times a constant"),
    # a ratio that is not constant is not a scale factor; a shift that is not constant is none
    (torch.tensor([1.0, 2.0, 6.0, 8.0]), torch.tensor([1.0, 2.0, 3.0, 4.0]), "times a constant"),
    (torch.tensor([1.0, 2.0, 3.0, 9.0]), torch.tensor([1.0, 2.0, 3.0, 4.0]), "shifted"),
    (torch.tensor([[1.0, 2.0], [3.5, 4.0]]), torch.tensor([[1.0, 3.0], [2.0, 4.0]]), "transposed"),
    (torch.tensor([-1.0, 2.0]), torch.tensor([1.0, 2.0]), "opposite sign"),
    # exact GELU for the tanh approximation: close, but no scale or shift explains it
    (torch.nn.functional.gelu(torch.linspace(-3, 3, 25)),
     torch.nn.functional.gelu(torch.linspace(-3, 3, 25), approximate="tanh"), "constant"),
    (1.0002, 1.0, "ratio"),
])
def test_a_diagnosis_is_not_printed_when_it_is_false(got, expected, absent):
    msg = explain(got, expected, atol=1e-6, rtol=1e-6)
    assert msg is not None and absent not in msg, msg


def test_the_same_nonfinite_entries_compare_as_equal():
    assert explain(MASKED.clone(), MASKED) is None
    assert explain(torch.tensor([float("nan"), 1.0]), torch.tensor([float("nan"), 1.0])) is None


# ------------------------------------------------------------------ named mistakes, raises, predictions

def test_a_catalogued_mistake_is_named_with_its_label():
    from llmlab.grading.compare import mistake_text
    from llmlab_book.ch00_intro import CATALOGUE, masked_mean_ignoring_mask

    label = "the mean over every position, masked ones included"
    msg = failure(masked_mean_ignoring_mask, masked_mean,
                  [grading.Case(torch.randn(2, 4, 3), torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]]).bool())],
                  mistakes=CATALOGUE.mistakes("masked_mean"))
    assert mistake_text(label) in msg


def test_exact_gelu_is_named_by_its_variant_not_by_a_guess():
    def gelu_tanh(x):
        return torch.nn.functional.gelu(x, approximate="tanh")

    def exact(x):
        return 0.5 * x * (1 + torch.erf(x / 2 ** 0.5))

    msg = failure(exact, gelu_tanh, [grading.Case(torch.linspace(-3, 3, 25))],
                  mistakes={"the exact (erf) GELU instead of the tanh approximation": exact})
    assert "known mistake gives: the exact (erf) GELU instead of the tanh approximation" in msg
    assert "constant" not in msg


def test_a_case_the_reference_rejects_must_be_rejected(capsys):
    cases = [grading.Case(torch.randn(1, 2, 10), 3, note="10 is not divisible by 3")]

    def no_check(x, n_heads):
        return x.view(x.shape[0], x.shape[1], n_heads, -1).transpose(1, 2)

    def checks(x, n_heads):
        if x.shape[-1] % n_heads:
            raise ValueError("not divisible")
        return no_check(x, n_heads)

    grading.check_function(checks, split_heads, cases)
    assert "✓" in capsys.readouterr().out
    msg = failure(no_check, split_heads, cases)
    assert "expected it to raise ValueError, but it raised RuntimeError" in msg
    msg = failure(lambda x, n: x, split_heads, cases)
    assert "expected it to raise ValueError, but it returned tensor(" in msg


def test_a_prediction_is_graded_on_the_number(capsys, monkeypatch):
    def right():
        return 3 / 11

    def wrong():
        return 3 / 8

    grading.check_prediction(right, 3 / 11, what="the bubble fraction")
    assert "✓" in capsys.readouterr().out
    with pytest.raises(AssertionError, match=r"expected 0\.272727, got 0\.375.*mistake gives: \(p-1\)/m"):
        grading.check_prediction(wrong, 3 / 11, what="the bubble fraction", mistakes={"(p-1)/m": wrong})

    def unanswered():
        raise NotImplementedError()

    monkeypatch.setenv("LLMLAB_GRADER", "0")  # a learner's Run All: the ✗ prints, nothing raises
    grading.check_prediction(unanswered, 3 / 11)
    out = capsys.readouterr().out
    assert "✗ unanswered" in out and "not implemented yet" in out


def test_check_value_and_check_module_name_mistakes():
    with pytest.raises(AssertionError, match="known mistake gives: bits, not bytes"):
        grading.check_value(8 * 1024, 1024, what="bytes", mistakes={"bits, not bytes": 8 * 1024})

    class Ref(torch.nn.Module):
        def __init__(self, d: int):
            super().__init__()
            self.w = torch.nn.Parameter(torch.randn(d))

        def forward(self, x):
            return x * self.w

    class Doubled(Ref):
        def forward(self, x):
            return 2 * x * self.w

    class Mine(torch.nn.Module):
        def __init__(self, d: int):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(d))

        def forward(self, x):
            return 2 * self.w * x

    with pytest.raises(AssertionError, match="known mistake gives: twice the output"):
        grading.check_module(Mine, Ref, dict(d=4), [grading.Case(torch.randn(2, 4))],
                             mistakes={"twice the output": Doubled})


def test_a_dataclass_result_is_compared_field_by_field_in_both_places():
    """A dataclass result (chapter 12's AgentRun) crosses to the grader as its fields, and a
    mismatch names the field, in the notebook and after the safe format alike."""
    import dataclasses
    import json

    from llmlab.grading.record import decode, encode

    @dataclasses.dataclass
    class Run:
        transcript: str
        answer: str | None = None
        calls: int = 0

    def carried(value):
        return decode(json.loads(json.dumps(encode(value))))

    right, wrong = Run("Task: 2+2\nAnswer: 4\n", "4", 1), Run("Task: 2+2\nAnswer: 4\n", "4", 2)
    assert explain(right, right) is None and explain(carried(right), carried(right)) is None
    assert explain(carried(right), right) is None  # the judge's record against the object
    for got, expected in [(wrong, right), (carried(wrong), carried(right))]:
        assert explain([got], [expected]) .startswith("the result[0].calls: expected 1, got 2")
    assert "expected a Run" in explain({"calls": 1}, right)
