"""`llmlab grade`: correct scores for right, wrong and hostile submissions; never a hang.

Each submission is chapter 00's learner release with answer cells filled in. Several faults are
combined per notebook, so one grading run checks that each costs only its own exercise.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest

from llmlab.grading.assemble import GradingError, grade_id
from llmlab.grading.autograde import grade_notebook

ROOT = Path(__file__).resolve().parents[2]
RELEASE = ROOT / "chapters" / "00_intro" / "00_intro.ipynb"

SOFTMAX = """def softmax(x, dim=-1):
    z = x - x.amax(dim=dim, keepdim=True)
    return z.exp() / z.exp().sum(dim=dim, keepdim=True)
"""
SPLIT = """from einops import rearrange
def split_heads_(x, n_heads):
    if x.shape[-1] % n_heads:
        raise ValueError("not divisible")
    return rearrange(x, "b s (h d) -> b h s d", h=n_heads)
"""
MEAN = """def masked_mean_(x, mask):
    m = mask.to(x.dtype).unsqueeze(-1)
    return (x * m).sum(1) / m.sum(1).clamp_min(1.0)
"""


def submission(tmp_path: Path, answers: dict[str, str], edit=None, name="00_intro.ipynb") -> Path:
    nb = nbformat.read(RELEASE, 4)
    for cell in nb.cells:
        if grade_id(cell) in answers:
            cell.source = answers[grade_id(cell)]
    if edit:
        edit(nb)
    folder = tmp_path / "00_intro"
    folder.mkdir(exist_ok=True)
    nbformat.write(nb, folder / name)
    return folder / name


def scores(report) -> dict[str, float]:
    return {e.id: e.score for e in report.exercises}


def test_full_marks_and_zero(tmp_path):
    full = grade_notebook(submission(tmp_path, {"softmax": SOFTMAX, "split_heads": SPLIT,
                                                "masked_mean": MEAN}))
    assert (full.score, full.max_score) == (6, 6)
    empty = grade_notebook(RELEASE)
    assert empty.score == 0 and empty.max_score == 6
    assert all("not implemented yet" in e.feedback for e in empty.exercises)


def test_loop_exception_and_wrong_answer_cost_only_their_exercise(tmp_path):
    start = time.monotonic()
    report = grade_notebook(submission(tmp_path, {
        "softmax": "def softmax(x, dim=-1):\n    while True:\n        pass\n",
        "split_heads": "def split_heads_(x, n_heads):\n    raise RuntimeError('boom')\n",
        "masked_mean": MEAN,
    }), timeout=5)
    assert scores(report) == {"softmax": 0, "split_heads": 0, "masked_mean": 2}
    fb = {e.id: e.feedback for e in report.exercises}
    assert "time limit" in fb["softmax"]
    assert "RuntimeError: boom" in fb["split_heads"]
    assert time.monotonic() - start < 120


def test_huge_print_sys_exit_and_edited_tests(tmp_path):
    def edit(nb):
        for cell in nb.cells:
            if grade_id(cell) == "masked_mean__check":
                cell.source = "pass  # the learner 'fixed' the test"

    report = grade_notebook(submission(tmp_path, {
        "softmax": SOFTMAX + "print('x' * 50_000_000)\n",
        "split_heads": "import sys\nsys.exit(0)\n" + SPLIT,
        "masked_mean": "def masked_mean_(x, mask):\n    return x.mean(1)\n",
    }, edit=edit), timeout=30)
    s = scores(report)
    assert s["softmax"] == 2          # a giant print is truncated, not fatal
    assert s["split_heads"] == 0      # the function was never defined
    assert s["masked_mean"] == 0      # the restored test catches the wrong mean


def test_kernel_crash_deleted_test_and_added_cell(tmp_path):
    def edit(nb):
        nb.cells = [c for c in nb.cells if grade_id(c) != "softmax__check"]
        nb.cells.insert(3, nbformat.v4.new_code_cell("HELPER = 1.0"))

    report = grade_notebook(submission(tmp_path, {
        "softmax": "def softmax(x, dim=-1):\n    import os\n    os._exit(1)\n",
        "split_heads": SPLIT,
        "masked_mean": MEAN.replace("1.0)", "HELPER)"),
    }, edit=edit), timeout=20)
    assert scores(report) == {"softmax": 0, "split_heads": 2, "masked_mean": 2}
    assert "crashed the Python kernel" in {e.id: e.feedback for e in report.exercises}["softmax"]


def test_malformed_notebook_is_a_clear_error(tmp_path):
    bad = tmp_path / "00_intro.ipynb"
    bad.write_text('{"cells": [ this is not json')
    with pytest.raises(GradingError, match="not a valid Jupyter notebook"):
        grade_notebook(bad)
    proc = subprocess.run([sys.executable, "-m", "llmlab.cli", "grade", str(bad)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and "not a valid Jupyter notebook" in proc.stderr


def test_unknown_chapter_is_a_clear_error(tmp_path):
    nb = tmp_path / "99_nope.ipynb"
    nbformat.write(nbformat.v4.new_notebook(), nb)
    with pytest.raises(GradingError, match="no chapter"):
        grade_notebook(nb)


def test_cli_json_and_all(tmp_path):
    submission(tmp_path, {"softmax": SOFTMAX})
    proc = subprocess.run([sys.executable, "-m", "llmlab.cli", "grade", "--json",
                           str(tmp_path / "00_intro" / "00_intro.ipynb")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert set(data) == {"notebook", "score", "max_score", "exercises"}
    assert data["score"] == 2 and data["max_score"] == 6
    assert set(data["exercises"][0]) == {"id", "score", "max_score", "feedback"}
    proc = subprocess.run([sys.executable, "-m", "llmlab.cli", "grade", "--all", str(tmp_path)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "2 / 6 points" in proc.stdout
