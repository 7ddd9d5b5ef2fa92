"""`llmlab grade --course`: a two-student nbgrader course graded on the hardened path, into
nbgrader's gradebook, with feedback pages and a similarity report."""

from __future__ import annotations

import json
import subprocess
import sys

from nbgrader.api import Gradebook

from llmlab.grading.course import run_nbgrader, write_config
from tests.platform.grading_fixture import NAME, RIGHT, authored, submission

# the authored answer with its names changed: flagged as a copy
SOLUTION_COPY = """def softmax(logits, dim=-1):
    \"\"\"My own softmax.\"\"\"
    shifted = logits - logits.amax(dim=dim, keepdim=True)
    return shifted.exp() / shifted.exp().sum(dim=dim, keepdim=True)
"""


def test_two_student_course(tmp_path):
    course = tmp_path / "course"
    (course / "solutions" / NAME).mkdir(parents=True)
    write_config(course, f"sqlite:///{course / 'gradebook.db'}")
    import nbformat

    nbformat.write(authored(), course / "solutions" / NAME / f"{NAME}.ipynb")
    run_nbgrader(["generate_assignment", NAME, "--force"], course, timeout=300)
    submission(course / "submitted" / "alice", {**RIGHT, "softmax": SOLUTION_COPY,
                                                "masked_mean": "def masked_mean_(x, mask):\n"
                                                               "    return x.mean(1)\n"})
    submission(course / "submitted" / "bob", {})
    proc = subprocess.run([sys.executable, "-m", "llmlab.cli", "grade", "--course", str(course),
                           "--assignment", NAME, "--json"], capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout)
    scores = {r["student"]: (r["score"], r["max_score"]) for r in summary["students"]}
    assert scores == {"alice": (7, 9), "bob": (0, 9)}
    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gb:
        alice = gb.find_submission(NAME, "alice")
        bob = gb.find_submission(NAME, "bob")
        assert (alice.score, alice.max_score) == (7, 9)
        assert bob.score == 0
        assert gb.find_grade("masked_mean__check", NAME, NAME, "alice").score == 0
        assert gb.find_grade("softmax__hidden", NAME, NAME, "alice").score == 1
    page = (course / "feedback" / "alice" / NAME / f"{NAME}.html").read_text()
    assert "7 / 9 points" in page and "masked_mean" in page
    assert (course / "feedback" / "bob" / NAME / f"{NAME}.html").exists()
    flags = json.loads((course / "feedback" / f"{NAME}-similarity.json").read_text())
    # alice's softmax is the authored answer renamed; her RMSNorm_ is the authored one as typed
    assert {(f["student"], f["exercise"]) for f in flags} == {("alice", "softmax"),
                                                            ("alice", "rmsnorm")}
    assert all("authored solution" in f["matches"] for f in flags)
