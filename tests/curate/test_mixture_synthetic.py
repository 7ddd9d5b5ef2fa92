"""Domain mixing (temperature weights, epochs per domain, sampling to a budget) and synthetic
data filtered by execution."""

from __future__ import annotations

from collections import Counter

import pytest

from llmlab.curate import Task, mixture_plan, sample_mixture, temperature_weights, verify
from llmlab.curate.synthetic import TASKS, function_source


def test_temperature_weights():
    sizes = {"web": 900, "code": 90, "books": 10}
    assert temperature_weights(sizes, 1.0) == pytest.approx({"web": 0.9, "code": 0.09, "books": 0.01})
    flat = temperature_weights(sizes, 1e6)
    assert all(abs(w - 1 / 3) < 1e-3 for w in flat.values())
    t2 = temperature_weights(sizes, 2.0)
    assert t2["books"] / t2["web"] == pytest.approx((10 / 900) ** 0.5)
    with pytest.raises(ValueError, match="temperature"):
        temperature_weights(sizes, 0)
    with pytest.raises(ValueError, match="not all 0"):
        temperature_weights({"a": 0}, 1)


def test_plan_and_sample():
    plan = mixture_plan({"a": 100, "b": 10}, {"a": 0.5, "b": 0.5}, 100)
    assert plan == {"a": {"tokens": 50, "epochs": 0.5}, "b": {"tokens": 50, "epochs": 5.0}}
    with pytest.raises(ValueError, match="same domains"):
        mixture_plan({"a": 1}, {"b": 1}, 10)
    domains = {"big": [f"b{i}" * 5 for i in range(100)], "small": ["s0" * 5, "s1" * 5]}
    out = sample_mixture(domains, {"big": 0.5, "small": 0.5}, 400, seed=0)
    chars = Counter()
    for d, doc in out:
        chars[d] += len(doc)
    assert abs(chars["big"] - 200) <= 10 and abs(chars["small"] - 200) <= 10
    counts = Counter(doc for d, doc in out if d == "small")
    assert counts["s0" * 5] == counts["s1" * 5] == 10  # whole passes: upsampled evenly
    assert len({doc for d, doc in out if d == "big"}) == sum(d == "big" for d, _ in out)  # no repeats
    assert out == sample_mixture(domains, {"big": 0.5, "small": 0.5}, 400, seed=0)


def test_function_source_cuts_at_the_function_end():
    prompt = 'def f(x):\n    """Doc."""\n    return'
    assert function_source(prompt, " x + 1\n\nprint(f(2))\n") == \
        'def f(x):\n    """Doc."""\n    return x + 1\n'
    assert function_source("x = [", "1, 2]\ny = 3") == "x = [1, 2]\n"


def test_verify_runs_tests_in_isolation():
    add = next(t for t in TASKS if t.name == "add")
    sources = [
        "def add(a, b):\n    return a + b\n",
        "def add(a, b):\n    return a - b\n",            # runs, wrong answers
        "def add(a, b)\n    return a + b\n",             # does not parse
        "def add(a, b):\n    while True:\n        pass\n",  # never returns
        "def add(a, b):\n    return str(a + b)\n",       # right digits, wrong type
        "import os\ndef add(a, b):\n    return os.getpid() and a + b\n",
    ]
    assert verify(sources, add, timeout=0.5) == [
        {"parses": True, "runs": True, "passes": True},
        {"parses": True, "runs": True, "passes": False},
        {"parses": False, "runs": False, "passes": False},
        {"parses": True, "runs": False, "passes": False},
        {"parses": True, "runs": True, "passes": False},
        {"parses": True, "runs": True, "passes": True},
    ]
    assert verify(["x = [1, 2]\n", "x = [1,\n"], Task(None, "x = [")) == [
        {"parses": True, "runs": True, "passes": True}, {"parses": False, "runs": False, "passes": False}]
