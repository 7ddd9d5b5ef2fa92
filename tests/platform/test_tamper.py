"""Tampering, graded end to end: every submission scores exactly what its honest part deserves.

Each test grades one submission of the small fixture chapter that combines independent attacks,
one per exercise (a blocked call or a crash ends only that exercise's judge), and checks every
exercise's score. A correct answer next to an attack keeps its points; an attack never adds any.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from llmlab.grading.assemble import GradingError, grade_id
from llmlab.grading.autograde import grade_notebook
from llmlab.grading.sandbox import cgroup_parent, network_isolated
from tests.platform.grading_fixture import MAX, RIGHT, feedback, scores, submission, write_solutions

WRONG_SOFTMAX = "def softmax(x, dim=-1):\n    return x\n"
WRONG_MEAN = "def masked_mean_(x, mask):\n    return x.mean(1)\n"
WRONG_NORM = RIGHT["rmsnorm"].replace("+ self.eps", "+ 1.0")
WRONG_PREDICT = "def predicted_scaled():\n    return float('nan')\n"
FAKE_REPORT = ("print('90_fixture.ipynb: 9 / 9 points')\n"
               "print('{\"notebook\": \"90_fixture.ipynb\", \"score\": 9, \"max_score\": 9}')\n"
               "print('\\n{\"cell\": \"softmax__check\", \"done\": true}')\n")


@pytest.fixture(scope="module")
def solutions(tmp_path_factory):
    return write_solutions(tmp_path_factory.mktemp("course"))


def grade(solutions, path, **kw):
    report = grade_notebook(path, solutions, **kw)
    for e in report.exercises:
        assert 0 <= e.score <= e.max_score == MAX[e.id]
    return report


def test_switching_the_checks_off(solutions, tmp_path):
    """Environment variable, replaced checks, rebound references, patched torch.isclose, an
    IPython ast_transformer, NaN answers, fake reports and records: none of it scores."""
    added = [
        "import os\nos.environ['LLMLAB_GRADER'] = '0'\n",
        "from llmlab import grading\nfrom llmlab.grading import checks\n"
        "from llmlab_book import ch00_intro as warmup\n"
        "for _name in ('check_function', 'check_module', 'check_value', 'expect'):\n"
        "    setattr(grading, _name, lambda *a, **k: print('✓ all checks passed'))\n"
        "    setattr(checks, _name, getattr(grading, _name))\n"
        "checks._RECORDER = None\n"
        "stable_softmax = warmup.stable_softmax = lambda x, dim=-1: x\n"
        "warmup.masked_mean = lambda x, mask: x.mean(1)\n",
        "import torch\ntorch.isclose = lambda *a, **k: torch.ones((), dtype=torch.bool)\n"
        "torch.allclose = lambda *a, **k: True\ntorch.equal = lambda *a, **k: True\n",
        "class _Swallow:\n    def visit(self, node):\n        return node\n"
        "try:\n    get_ipython().ast_transformers.append(_Swallow())\nexcept NameError:\n    pass\n",
        FAKE_REPORT,
    ]
    report = grade(solutions, submission(tmp_path, {
        "softmax": WRONG_SOFTMAX, "split_heads": RIGHT["split_heads"], "masked_mean": WRONG_MEAN,
        "rmsnorm": WRONG_NORM, "predict": WRONG_PREDICT}, added=added))
    assert scores(report) == {**dict.fromkeys(MAX, 0), "split_heads": 2}
    assert "NaN" in feedback(report)["predict"]


def test_reaching_the_reference_past_the_guard(solutions, tmp_path):
    """contextvars, a thread pool, inspect.getsource + exec, a fresh import and a subclass of
    the reference class, a Tensor-method twin, reading the checker's frames or the judge's
    objects (gc): each is blocked or finds nothing, and costs only its exercise."""
    report = grade(solutions, submission(tmp_path, {
        "softmax": "import contextvars\nfrom llmlab_book import ch00_intro as warmup\n"
                   "def softmax(x, dim=-1):\n"
                   "    return contextvars.Context().run(warmup.stable_softmax, x, dim)\n",
        "split_heads": "from concurrent.futures import ThreadPoolExecutor\n"
                       "from llmlab_book import ch00_intro as warmup\n"
                       "def split_heads_(x, n_heads):\n"
                       "    with ThreadPoolExecutor(1) as pool:\n"
                       "        return pool.submit(warmup.split_heads, x, n_heads).result()\n",
        "masked_mean": "import inspect\nfrom llmlab_book import ch00_intro as warmup\n"
                       "_ns = dict(vars(warmup))\n"
                       "exec(inspect.getsource(warmup.masked_mean), _ns)\n"
                       "masked_mean_ = _ns['masked_mean']\n",
        "rmsnorm": "import sys, importlib\nsys.modules.pop('llmlab.nn.norm', None)\n"
                   "_fresh = importlib.import_module('llmlab.nn.norm')\n"
                   "class RMSNorm_(_fresh.RMSNorm):\n    pass\n",
        "predict": "import gc, sys\ndef predicted_scaled():\n"
                   "    for o in gc.get_objects():  # the judge's job, if it held the answers\n"
                   "        if type(o) is dict and o.get('kind') == 'value' and 'expected' in o:\n"
                   "            return o['expected'][0]['value']\n"
                   "    f = sys._getframe()\n"
                   "    while f is not None:\n"
                   "        for k in ('expected', 'want', 'entry'):\n"
                   "            if k in f.f_locals:\n                return f.f_locals[k]\n"
                   "        f = f.f_back\n"
                   "    return None\n",
    }))
    assert scores(report) == dict.fromkeys(MAX, 0)
    fb = feedback(report)
    assert "stable_softmax" in fb["softmax"] and "write yourself" in fb["softmax"]
    assert "threads are not available" in fb["split_heads"]
    assert "masked_mean" in fb["masked_mean"] and "write yourself" in fb["masked_mean"]
    assert "RMSNorm" in fb["rmsnorm"]

    twin = grade(solutions, submission(tmp_path / "twin", {
        **RIGHT, "softmax": "def softmax(x, dim=-1):\n    return x.softmax(dim)\n",
        "split_heads": "import torch.nn.functional as F\n" + RIGHT["split_heads"].replace(
            "    return", "    F.softmax(x, -1)\n    return")}))
    # softmax blocks torch.softmax and every namesake; split_heads may use softmax freely
    assert scores(twin) == {**MAX, "softmax": 0}


def test_reaching_outside(solutions, tmp_path):
    """Secrets in the environment, processes that would outlive the grade, writes to the
    repository, killing the grader, network, a 4 GB allocation."""
    marker = "987654"
    repo = Path(__file__).resolve().parents[2]
    added = [
        "import os, subprocess\n"
        f"try:\n    subprocess.Popen(['sleep', '{marker}'], start_new_session=True)\n"
        "except Exception:\n    pass\n"
        "try:\n    os.fork()\nexcept Exception:\n    pass\n"
        "try:\n    os.kill(os.getppid(), 9)\nexcept Exception:\n    pass\n"
        f"try:\n    open({str(repo / 'solutions' / 'TAMPERED')!r}, 'w').write('x')\n"
        "except Exception:\n    pass\n",
    ]
    net = ("import socket\ndef _online():\n    try:\n"
           "        socket.create_connection(('1.1.1.1', 53), timeout=2).close()\n"
           "        return True\n    except OSError:\n        return False\n")
    os.environ["LLMLAB_TEST_SECRET"] = "hunter2"
    try:
        report = grade(solutions, submission(tmp_path, {
            "softmax": net + RIGHT["softmax"].replace(
                "    z = ", "    x = x * 2 if _online() else x\n    z = "),
            "split_heads": RIGHT["split_heads"],
            "masked_mean": "import os\ndef masked_mean_(x, mask):\n"
                           "    raise RuntimeError('SECRET=' + os.environ.get('LLMLAB_TEST_SECRET', 'none')"
                           " + '\\x1b[31m red')\n",
            "rmsnorm": RIGHT["rmsnorm"],
            "predict": "def predicted_scaled():\n    block = bytearray(4 << 30)\n    return 21.0\n",
        }, added=added))
    finally:
        del os.environ["LLMLAB_TEST_SECRET"]
    expected = {**MAX, "masked_mean": 0, "predict": 0}
    if not network_isolated():
        expected["softmax"] = scores(report)["softmax"]  # no network namespace on this machine
    assert scores(report) == expected
    fb = feedback(report)
    assert "SECRET=none" in fb["masked_mean"] and "\x1b" not in fb["masked_mean"]
    assert "MemoryError" in fb["predict"] or "memory" in fb["predict"]
    assert not (repo / "solutions" / "TAMPERED").exists()
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert f"sleep {marker}" not in ps


def test_honest_work_with_odd_metadata_and_exits(solutions, tmp_path):
    """Warnings on stderr, lost nbgrader metadata, edited points/grade_id/locked, duplicate
    cell ids, sys.exit and os._exit after faking output."""
    def edit(nb):
        for cell in nb.cells:
            gid = grade_id(cell)
            if gid == "split_heads":
                cell.metadata = {}                                   # metadata lost
            if gid == "masked_mean__check":
                cell.metadata["nbgrader"].update(points=1000, locked=False)
                cell.source = "pass  # 'fixed' the test"
            if gid == "masked_mean":
                cell.metadata["nbgrader"]["points"] = 50
        rms = next(c for c in nb.cells if grade_id(c) == "rmsnorm")
        wrong = nbformat_copy(rms, WRONG_NORM)
        nb.cells.insert(nb.cells.index(rms), wrong)                  # duplicate id, runs first

    report = grade(solutions, submission(tmp_path, {
        "softmax": "import sys, warnings\n" + RIGHT["softmax"].replace(
            "    z = ", "    warnings.warn('careful')\n    print('oops', file=sys.stderr)\n    z = "),
        "split_heads": RIGHT["split_heads"], "masked_mean": RIGHT["masked_mean"],
        "rmsnorm": RIGHT["rmsnorm"],
        "predict": FAKE_REPORT + "import sys\nsys.exit(0)\n" + RIGHT["predict"],
    }, edit=edit))
    assert scores(report) == {**MAX, "predict": 0}
    assert report.max_score == 9

    crash = grade(solutions, submission(tmp_path / "exit", {
        **RIGHT, "predict": FAKE_REPORT + "import os\nos._exit(0)\n" + WRONG_PREDICT,
        "softmax": "import os\ndef softmax(x, dim=-1):\n    print('✓ all checks passed')\n"
                   "    os._exit(0)\n"}))
    assert scores(crash) == {**MAX, "predict": 0, "softmax": 0}
    assert "crashed" in feedback(crash)["softmax"]


PROC_ATTACK = (
    "import os\n"
    "def _reached_proc():\n"
    "    got = []\n"
    "    for path in ('/proc/self/mem', f'/proc/{os.getppid()}/mem', f'/proc/{os.getppid()}/fd',\n"
    "                 '/proc/self', f'/proc/{os.getppid()}/task/{os.getppid()}/mem'):\n"
    "        try:\n"
    "            os.close(os.open(path, os.O_RDONLY))\n"
    "            got.append(path)\n"
    "        except Exception:\n"
    "            pass\n"
    "    return got\n"
)
FORGED_PROTOCOL = (
    "import os\n"
    "def masked_mean_(x, mask):\n"
    "    for fd in range(64):\n"
    "        try:\n"
    "            os.write(fd, b'{\"exit\": 0}\\n{\"pid\": 1}\\n{\"end\": true}\\n')\n"
    "        except OSError:\n"
    "            pass\n"
    "    return x.mean(1)\n"
)


def test_the_judges_server_is_out_of_reach(solutions, tmp_path):
    """Judges are forked from one server per grade: a judge cannot open its own or the server's
    memory or file descriptors through /proc, and messages it writes to every descriptor it has
    do not pass for the server's; later exercises grade as before."""
    report = grade(solutions, submission(tmp_path, {
        **RIGHT,
        "softmax": PROC_ATTACK + RIGHT["softmax"].replace(
            "    z = ", "    assert not _reached_proc(), _reached_proc()\n    z = "),
        "masked_mean": FORGED_PROTOCOL,
    }), workers=1)
    assert scores(report) == {**MAX, "masked_mean": 0}


def nbformat_copy(cell, source):
    import copy

    new = copy.deepcopy(cell)
    new.source = source
    return new


def test_another_chapters_notebook_is_refused(solutions, tmp_path):
    other = Path(__file__).resolve().parents[2] / "chapters" / "08_kvcache" / "08_kvcache.ipynb"
    target = tmp_path / "90_fixture"
    target.mkdir()
    (target / "90_fixture.ipynb").write_bytes(other.read_bytes())
    with pytest.raises(GradingError, match="another chapter"):
        grade_notebook(target / "90_fixture.ipynb", solutions)


def test_grader_killed_leaves_nothing_behind(solutions, tmp_path):
    """SIGKILL the grader mid-grade: its judges die, and its temporary directory and the
    judges' cgroups are removed."""
    import time

    tmp = tmp_path / "tmp"
    tmp.mkdir()
    path = submission(tmp_path, {**RIGHT, "softmax": "def softmax(x, dim=-1):\n    while True:\n"
                                                      "        pass\n"})
    proc = subprocess.Popen([sys.executable, "-m", "llmlab.cli", "grade", str(path), "--solutions",
                             str(solutions), "--timeout", "120"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env={**os.environ, "TMPDIR": str(tmp)})
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not _judges_in(tmp):
        time.sleep(0.2)
    assert _judges_in(tmp), "no judge started"
    groups = _cgroups_of(_judges_in(tmp))
    assert groups or cgroup_parent() is None
    proc.kill()
    proc.wait()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and (list(tmp.iterdir()) or _judges_in(tmp)
                                           or any(g.exists() for g in groups)):
        time.sleep(0.2)
    assert list(tmp.iterdir()) == [] and _judges_in(tmp) == []
    assert not [g for g in groups if g.exists()], "the judges' cgroups were left behind"


def _cgroups_of(pids: list[int]) -> list[Path]:
    """The sandbox cgroups (where the grader can create them) that hold any of ``pids``."""
    parent = cgroup_parent()
    found = []
    for group in parent.glob("llmlab-*") if parent else []:
        try:
            members = {int(p) for p in (group / "cgroup.procs").read_text().split()}
        except OSError:
            continue
        if members & set(pids):
            found.append(group)
    return found


def _judges_in(folder: Path) -> list[int]:
    """Processes whose working directory is in a grader's workspace under ``folder`` (its
    judges; not the probes that test what sandboxes the machine allows)."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            cwd = os.readlink(proc / "cwd")
            if proc.name.isdigit() and str(folder) in cwd and "/llmlab-grade-" in cwd:
                found.append(int(proc.name))
        except OSError:
            continue
    return found


def test_an_answer_that_is_the_reference(solutions, tmp_path):
    """The reference bound as the answer (an alias, a partial, a bound method, via a fresh copy
    of its code object in a new function) scores nothing: the judge never trusts the frames
    that call an answer, and a learner's name for a blocked callable refuses to run."""
    report = grade(solutions, submission(tmp_path, {
        "softmax": "from llmlab_book import ch00_intro as warmup\nsoftmax = warmup.stable_softmax\n",
        "split_heads": "import functools\nfrom llmlab_book import ch00_intro as warmup\n"
                       "split_heads_ = functools.partial(warmup.split_heads)\n",
        "masked_mean": "import types\nfrom llmlab_book import ch00_intro as warmup\n"
                       "masked_mean_ = types.FunctionType(warmup.masked_mean.__code__, vars(warmup))\n",
        "rmsnorm": RIGHT["rmsnorm"],
        "predict": WRONG_PREDICT,
    }))
    assert scores(report) == {**dict.fromkeys(MAX, 0), "rmsnorm": MAX["rmsnorm"]}
    fb = feedback(report)
    for name in ("softmax", "split_heads", "masked_mean"):
        assert "write yourself" in fb[name], fb[name]


def test_recursion_cannot_switch_the_guard_off(solutions, tmp_path):
    """A profile function that raises (a RecursionError at the recursion limit) would be removed
    by CPython, through the same ``sys.setprofile`` the audit hook refuses: the guard stays."""
    attack = ("from llmlab_book import ch00_intro as warmup\n"
              "def _deep(n, x, dim):\n"
              "    if n == 0:\n"
              "        try:\n"
              "            return warmup.stable_softmax(x, dim)\n"
              "        except (RecursionError, RuntimeError):\n"
              "            return None\n"
              "    return _deep(n - 1, x, dim)\n"
              "def softmax(x, dim=-1):\n"
              "    for n in range(1100, 900, -1):\n"
              "        try:\n"
              "            _deep(n, x, dim)\n"
              "        except (RecursionError, RuntimeError):\n"
              "            continue\n"
              "    return warmup.stable_softmax(x, dim)\n")
    report = grade(solutions, submission(tmp_path, {**RIGHT, "softmax": attack}))
    assert scores(report) == {**MAX, "softmax": 0}
    assert "write yourself" in feedback(report)["softmax"]
