"""Grading off Linux, or on a Linux without one of the sandbox's features: each feature is
switched off as the platform would lack it, and grading still scores every answer correctly,
states the weaker guarantee it ran under, and keeps the reference cache off the disk wherever a
judge could read it.

The features (:func:`llmlab.grading.sandbox.features`): user namespaces (``unshare``: no
network, a private root), ``prlimit`` (the process limit inside a namespace), cgroups,
``prctl`` (``PR_SET_PDEATHSIG``, an undumpable grader) and ``resource`` (``setrlimit``).
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from llmlab.grading import autograde, sandbox
from llmlab.grading.autograde import grade_notebook
from llmlab.grading.sandbox import Limits, Workspace, kill, launch, minimal_env
from tests.platform.grading_fixture import MAX, RIGHT, feedback, scores, submission, write_solutions

# feature -> what in llmlab.grading.sandbox finds it (None: the platform lacks it)
OFF = {"namespaces": "_unshare", "prlimit": "_prlimit", "cgroups": "cgroup_parent",
       "prctl": "_prctl", "resource": "resource"}
# what the report must then say (sandbox.weaker_guarantees)
NOTE = {
    "namespaces": "with this machine's network and could read every file",
    "resource": "no kernel limit on memory_bytes, cpu_seconds, file_bytes, open_files",
    "prctl": "do not die with the grader",
}
WRONG_MEAN = "def masked_mean_(x, mask):\n    return x.mean(1)\n"
LOOP = "def softmax(x, dim=-1):\n    while True:\n        pass\n"


def switch_off(monkeypatch, *names: str) -> None:
    for name in names:
        if name == "resource":
            monkeypatch.setattr(sandbox, "resource", None)
        else:
            monkeypatch.setattr(sandbox, OFF[name], lambda: None)


@pytest.fixture(scope="module")
def solutions(tmp_path_factory):
    return write_solutions(tmp_path_factory.mktemp("course"))


@pytest.mark.parametrize("feature", sorted(OFF))
def test_launch_and_report_without(feature, monkeypatch):
    """A sandboxed process still starts, runs and is killed; the report names what is lost."""
    switch_off(monkeypatch, feature)
    have = sandbox.features()
    if feature == "namespaces":
        assert not have["namespaces"] and not have["private_root"]
        assert not sandbox.files_isolated() and not sandbox.network_isolated()
    if feature == "resource":
        assert have["resource_limits"] == []
    if feature == "prctl":
        assert not have["pdeathsig"] and sandbox._dumpable() is None
    if feature == "cgroups":
        assert not have["cgroups"] and sandbox.new_group(4) is None
    if feature in NOTE:
        assert any(NOTE[feature] in n for n in sandbox.weaker_guarantees()), \
            sandbox.weaker_guarantees()
    with Workspace() as ws:
        scratch = ws.scratch("probe-")
        proc = launch([sys.executable, "-c", "print('ran')"], scratch, minimal_env(scratch),
                      Limits(), stdout=subprocess.PIPE)
        try:
            out, _ = proc.communicate(timeout=60)
        finally:
            kill(proc)
    assert proc.returncode == 0 and out.strip() == b"ran"


def test_every_feature_present_states_no_weaker_guarantee():
    if not (sandbox.files_isolated() and sandbox.process_limit_binds()
            and sandbox._prctl() is not None and sandbox.resource is not None):
        pytest.skip("this machine lacks a sandbox feature")
    assert sandbox.weaker_guarantees() == []


@pytest.mark.parametrize("feature", sorted(OFF))
def test_grading_without(feature, solutions, tmp_path, monkeypatch):
    """One wrong answer costs its exercise, every right one scores; without resource limits
    a busy loop is still stopped (by the grader's time limit)."""
    switch_off(monkeypatch, feature)
    answers = {**RIGHT, "masked_mean": WRONG_MEAN}
    if feature == "resource":
        answers["softmax"] = LOOP
    report = grade_notebook(submission(tmp_path, answers), solutions, timeout=5)
    lost = {"masked_mean": 0, **({"softmax": 0} if feature == "resource" else {})}
    assert scores(report) == {**MAX, **lost}, feedback(report)
    if feature == "resource":
        assert "time limit" in feedback(report)["softmax"]
    assert report.sandbox["notes"] == sandbox.weaker_guarantees()
    if feature in NOTE:
        assert NOTE[feature] in report.table()


def test_off_linux(solutions, tmp_path, monkeypatch):
    """Every feature off at once, as on macOS: grading is still right, the table states each
    weaker guarantee, and the reference run stays in the grader's memory (a judge can read the
    machine's files, so nothing on disk holds an expected result)."""
    switch_off(monkeypatch, *OFF)
    cache = tmp_path / "cache"
    monkeypatch.setenv(autograde.CACHE_ENV, str(cache))
    monkeypatch.setattr(autograde, "_MEMORY", {})  # a fresh reference run, under these features
    report = grade_notebook(submission(tmp_path, {**RIGHT, "masked_mean": WRONG_MEAN}), solutions)
    assert scores(report) == {**MAX, "masked_mean": 0}, feedback(report)
    assert not cache.exists() or not any(cache.iterdir())
    assert report.sandbox["files_isolated"] is False
    table = report.table()
    for note in NOTE.values():
        assert note in table, table
    assert "the process limit is not enforced" in table
