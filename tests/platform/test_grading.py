"""`llmlab grade`: right, wrong and unfinished submissions of a small chapter; never a hang.

Several faults are combined per submission, so one grading run checks that each costs only its
own exercise. The attacks a learner could try are in test_tamper.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import nbformat
import pytest

from llmlab.grading.assemble import GradingError
from llmlab.grading.autograde import grade_notebook
from llmlab.grading.compare import mistake_text
from tests.platform.grading_fixture import (
    MAX,
    MEAN,
    RIGHT,
    SPLIT,
    feedback,
    scores,
    submission,
    write_solutions,
)


@pytest.fixture(scope="module")
def solutions(tmp_path_factory):
    return write_solutions(tmp_path_factory.mktemp("course"))


def test_full_marks_and_zero(solutions, tmp_path):
    full = grade_notebook(submission(tmp_path / "a", RIGHT), solutions)
    assert scores(full) == MAX and (full.score, full.max_score) == (9, 9)
    empty = grade_notebook(submission(tmp_path / "b", {}), solutions)
    assert empty.score == 0 and empty.max_score == 9
    assert all("not implemented yet" in e.feedback for e in empty.exercises
               if e.id not in ("split_heads", "predict")), feedback(empty)


def test_loop_exception_and_wrong_answer_cost_only_their_exercise(solutions, tmp_path):
    start = time.monotonic()
    report = grade_notebook(submission(tmp_path, {
        "softmax": "def softmax(x, dim=-1):\n    while True:\n        pass\n",
        "split_heads": "def split_heads_(x, n_heads):\n    raise RuntimeError('boom')\n",
        "masked_mean": "def masked_mean_(x, mask):\n    return x.mean(1)\n",
        "rmsnorm": RIGHT["rmsnorm"], "predict": RIGHT["predict"],
    }), solutions, timeout=5)
    assert scores(report) == {**MAX, "softmax": 0, "split_heads": 0, "masked_mean": 0}
    fb = feedback(report)
    assert "time limit" in fb["softmax"]
    assert "RuntimeError: boom" in fb["split_heads"]
    assert "values differ" in fb["masked_mean"] and "case 1 of 1" in fb["masked_mean"]
    # the catalogued mistake is named in the check's own words (recorded by the reference run)
    assert mistake_text("the mean over every position, masked ones included") in fb["masked_mean"]
    assert time.monotonic() - start < 120


def test_an_answer_that_changes_its_input_in_place(solutions, tmp_path):
    """Right results, but the input edited in place: the grader compares the arguments after
    the call with the reference's, as the instant feedback does."""
    in_place = ("def softmax(x, dim=-1):\n    x.sub_(x.amax(dim=dim, keepdim=True))\n"
                "    return x.exp() / x.exp().sum(dim=dim, keepdim=True)\n")
    report = grade_notebook(submission(tmp_path, {**RIGHT, "softmax": in_place}), solutions)
    assert scores(report) == {**MAX, "softmax": 0}
    assert "changed its input in place" in feedback(report)["softmax"]


def test_malformed_notebook_is_a_clear_error(solutions, tmp_path):
    bad = tmp_path / "90_fixture.ipynb"
    bad.write_text('{"cells": [ this is not json')
    with pytest.raises(GradingError, match="not a valid Jupyter notebook"):
        grade_notebook(bad, solutions)
    proc = subprocess.run([sys.executable, "-m", "llmlab.cli", "grade", str(bad),
                           "--solutions", str(solutions)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and "not a valid Jupyter notebook" in proc.stderr


def test_unknown_chapter_is_a_clear_error(solutions, tmp_path):
    nb = tmp_path / "99_nope.ipynb"
    nbformat.write(nbformat.v4.new_notebook(), nb)
    with pytest.raises(GradingError, match="no chapter"):
        grade_notebook(nb, solutions)


def test_cli_json_out_and_all(solutions, tmp_path):
    path = submission(tmp_path, {"split_heads": SPLIT, "masked_mean": MEAN})
    out = tmp_path / "result.json"
    proc = subprocess.run([sys.executable, "-m", "llmlab.cli", "grade", "--json", str(path),
                           "--solutions", str(solutions), "--out", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert json.loads(out.read_text()) == data
    assert set(data) == {"notebook", "score", "max_score", "exercises", "sandbox"}
    assert data["score"] == 4 and data["max_score"] == 9
    assert set(data["exercises"][0]) == {"id", "score", "max_score", "feedback"}
    proc = subprocess.run([sys.executable, "-m", "llmlab.cli", "grade", "--all", str(tmp_path),
                           "--solutions", str(solutions)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "4 / 9 points" in proc.stdout
