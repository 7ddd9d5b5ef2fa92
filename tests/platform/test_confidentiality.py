"""Nothing a judge can read holds an expected result: attacks on chapters 00 and 01, graded end
to end with a warm reference cache.

Each answer below computes nothing: it looks its result up — in the reference run's cache (by
the bytes of its inputs), anywhere on the file system (any JSON or pickle), in the authored
notebooks and scripts of ``solutions/``, or through ``/proc`` (another process's root, working
directory and environment). Every other exercise is answered honestly, and each submission must
score exactly its honest part: an attacked exercise scores 0.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path

import nbformat
import pytest

from llmlab.grading import autograde
from llmlab.grading.assemble import grade_id, is_solution
from llmlab.grading.autograde import grade_notebook
from llmlab.grading.sandbox import Workspace, files_isolated

ROOT = Path(__file__).resolve().parents[2]

# Looks a call up in every reference-cache file it can read: the recorded cases are indexed by
# their arguments, and the recorded expected value of an equal case is returned.
LOOKUP = r'''
import base64 as _b64, glob as _glob, json as _json, os as _os, pickle as _pickle


def _same(a, b):
    import torch
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.shape == b.shape
                and a.dtype == b.dtype and bool((a == b).all()))
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    try:
        return bool(a == b)
    except Exception:
        return False


def _cases_in(data):
    out = []
    if not isinstance(data, dict):
        return out
    for entries in (data.get("calls") or {}).values():
        for e in entries if isinstance(entries, list) else []:
            try:
                cases = _pickle.loads(_b64.b64decode(e["payload"]))
            except Exception:
                continue
            for (a, k), exp in zip(cases, e.get("expected", [])):
                if "value" in exp:
                    out.append((a, k, exp["value"]))
    return out


def _load(path):
    try:
        if path.endswith((".pkl", ".pickle")):
            with open(path, "rb") as f:
                return _pickle.load(f)
        with open(path) as f:
            return _json.load(f)
    except Exception:
        return None


_INDEX = {}


def _stolen(where, *args, **kwargs):
    if where not in _INDEX:
        _INDEX[where] = [c for p in globals()[where]() for c in _cases_in(_load(p))]
    from llmlab.grading.record import decode
    for a, k, v in _INDEX[where]:
        if _same(list(a), list(args)) and _same(k, kwargs):
            return decode(v)
    raise ValueError("not found in any cache")
'''

CACHE_GLOB = LOOKUP + r'''

def _cache_files():
    import pwd
    homes = {_os.path.expanduser("~"), pwd.getpwuid(0).pw_dir}
    homes |= {p.pw_dir for p in pwd.getpwall()}
    dirs = [{cache!r}] + [h + "/.cache/llmlab/grading" for h in homes]
    return [f for d in dirs for f in _glob.glob(d + "/*.json")]
'''

WALK = LOOKUP + r'''

def _walk_files():
    import time
    found, start = [], time.monotonic()
    for top in ("/tmp", "/root", "/home", "/work", "/var/tmp", "/srv"):
        for d, dirs, files in _os.walk(top):
            dirs[:] = [x for x in dirs if x not in (".venv", "site-packages", ".git", ".pyenv",
                                                   "node_modules", "__pycache__", "chapters")]
            found += [_os.path.join(d, f) for f in files
                      if f.endswith((".json", ".pkl", ".pickle"))]
            if time.monotonic() - start > 25:
                return found
    return found
'''

PROC = LOOKUP + r'''

def _proc_files():
    """The cache as other processes see it: their environment names it, their root reaches it."""
    paths = []
    for pid in _os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                env = dict(kv.split(b"=", 1) for kv in f.read().split(b"\0") if b"=" in kv)
        except Exception:
            env = {}
        dirs = {env.get(b"LLMLAB_GRADING_CACHE", b"").decode(), {cache!r}}
        dirs |= {env.get(b"HOME", b"/root").decode() + "/.cache/llmlab/grading"}
        for d in dirs - {""}:
            for sub in ("root", "cwd"):
                paths += _glob.glob(f"/proc/{pid}/{sub}{d}/*.json")
    return paths
'''

# The authored solution, read from solutions/ (the script or the notebook) and executed with one
# statement added (its code would otherwise be llmlab's reference, which the guard blocks).
SOLUTION_SCRIPT = r'''
import llmlab as _llmlab, pathlib as _pathlib, re as _re

_src = ""
for _root in {{_pathlib.Path(_llmlab.__file__).resolve().parents[1], _pathlib.Path({root!r})}}:
    for _script in _root.glob("solutions/{chapter}*/*.py"):
        try:
            _text = _script.read_text()
        except OSError:
            continue
        _m = _re.search(r'# %% solution="{exercise}"\n(.*?)\n# %%', _text, _re.S)
        _src = _src or (_m.group(1) if _m else "")
exec(_src.replace("### BEGIN SOLUTION", "_copied = True"))
'''

SOLUTION_NOTEBOOK = r'''
import json as _json, llmlab as _llmlab, pathlib as _pathlib

_src = ""
for _root in {{_pathlib.Path(_llmlab.__file__).resolve().parents[1], _pathlib.Path({root!r})}}:
    for _nb in _root.glob("solutions/{chapter}*/*.ipynb"):
        try:
            _cells = _json.loads(_nb.read_text())["cells"]
        except (OSError, ValueError, KeyError):
            continue
        for _c in _cells:
            if _c.get("metadata", {{}}).get("nbgrader", {{}}).get("grade_id") == "{exercise}" \
                    and _c.get("metadata", {{}}).get("nbgrader", {{}}).get("solution"):
                _src = _src or "".join(_c["source"])
exec(_src.replace("### BEGIN SOLUTION", "_copied = True"))
'''


def answer(lookup: str, where: str, name: str, cache: str) -> str:
    """An answer ``name(*args, **kwargs)`` that returns what ``where`` finds for its arguments."""
    return (lookup.replace("{cache!r}", repr(cache))
            + f"\n\ndef {name}(*args, **kwargs):\n    return _stolen({where!r}, *args, **kwargs)\n")


@pytest.fixture(scope="module")
def warm_cache(tmp_path_factory):
    """The reference cache of chapters 00 and 01, on disk where the grader keeps it."""
    folder = tmp_path_factory.mktemp("grading-cache")
    saved = os.environ.get(autograde.CACHE_ENV)
    os.environ[autograde.CACHE_ENV] = str(folder)
    try:
        autograde._MEMORY.clear()  # an earlier test in this process may hold these runs in memory
        with Workspace() as ws:
            for chapter in ("00_intro", "01_tokenization"):
                autograde.reference(ROOT / "solutions" / chapter / f"{chapter}.ipynb", ws, 600)
        yield folder
    finally:
        if saved is None:
            os.environ.pop(autograde.CACHE_ENV, None)
        else:
            os.environ[autograde.CACHE_ENV] = saved


def learner(tmp_path: Path, chapter: str, answers: dict[str, str]) -> Path:
    """The authored notebook with ``answers`` (by exercise) in place of the authored ones."""
    nb = nbformat.read(ROOT / "solutions" / chapter / f"{chapter}.ipynb", 4)
    nb = copy.deepcopy(nb)
    for cell in nb.cells:
        if is_solution(cell) and grade_id(cell) in answers:
            cell.source = answers[grade_id(cell)]
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    out = tmp_path / chapter / f"{chapter}.ipynb"
    out.parent.mkdir(parents=True)
    nbformat.write(nb, out)
    return out


def scores(report) -> dict[str, float]:
    return {e.id: e.score for e in report.exercises}


def test_chapter_00(warm_cache, tmp_path):
    """split_heads from the cache, masked_mean from the cache through /proc; softmax honest."""
    cache = str(warm_cache)
    assert list(warm_cache.glob("00_intro-*.json")) or not autograde._cache_dir()
    path = learner(tmp_path, "00_intro", {
        "split_heads": answer(CACHE_GLOB, "_cache_files", "split_heads_", cache),
        "masked_mean": answer(PROC, "_proc_files", "masked_mean_", cache),
    })
    report = grade_notebook(path)
    assert scores(report) == {"softmax": 2, "split_heads": 0, "masked_mean": 0}, \
        [(e.id, e.feedback) for e in report.exercises]


def test_chapter_01(warm_cache, tmp_path):
    """bpe_fast from the cache, wordpiece_word from a walk of the file system, chat_mask and
    viterbi_segment from solutions/, train_bpe_naive through /proc; every other exercise honest."""
    cache = str(warm_cache)
    path = learner(tmp_path, "01_tokenization", {
        "bpe_fast": answer(CACHE_GLOB, "_cache_files", "bpe_merges_fast", cache),
        "wordpiece_word": answer(WALK, "_walk_files", "wordpiece_word", cache),
        "chat_mask": SOLUTION_SCRIPT.format(root=str(ROOT), chapter="01", exercise="chat_mask"),
        "viterbi_segment": SOLUTION_NOTEBOOK.format(root=str(ROOT), chapter="01",
                                                    exercise="viterbi_segment"),
        "train_bpe_naive": answer(PROC, "_proc_files", "train_bpe_naive", cache),
    })
    report = grade_notebook(path)
    got = scores(report)
    honest = {e.id: e.max_score for e in report.exercises}
    attacked = {"bpe_fast", "wordpiece_word", "chat_mask", "viterbi_segment", "train_bpe_naive"}
    if not files_isolated():  # solutions/ is on the judges' file system (README, threat model)
        attacked -= {"chat_mask", "viterbi_segment"}
    assert got == {**honest, **dict.fromkeys(attacked, 0)}, \
        [(e.id, e.score, e.feedback[:300]) for e in report.exercises]


# Appended to an honest answer: before computing, it looks for a file another exercise's judge
# left in /tmp or /dev/shm (and answers wrong if it finds one), then leaves its own.
DROPBOX = '''

_honest_{name} = {name}


def {name}(*args, **kwargs):
    import glob
    left = [p for d in ("/tmp", "/dev/shm") for p in glob.glob(d + "/llmlab-drop-*")
            if not p.endswith("-{exercise}")]
    for d in ("/tmp", "/dev/shm"):
        with open(d + "/llmlab-drop-{exercise}", "w") as f:
            f.write("a note for the next job")
    return None if left else _honest_{name}(*args, **kwargs)
'''


def test_a_judge_finds_nothing_an_earlier_job_left_in_tmp(tmp_path):
    """Jobs on one judge server (one worker, exercise after exercise) share no /tmp, /dev/shm or
    folder: in a class, the next job is another student's."""
    if not files_isolated():
        pytest.skip("no private root here: /tmp is the machine's (README, the threat model)")
    nb = nbformat.read(ROOT / "solutions" / "00_intro" / "00_intro.ipynb", 4)
    names = {"softmax": "softmax", "split_heads": "split_heads_", "masked_mean": "masked_mean_"}
    answers = {}
    for cell in nb.cells:
        if is_solution(cell) and grade_id(cell) in names:
            exercise = grade_id(cell)
            answers[exercise] = cell.source + DROPBOX.format(name=names[exercise], exercise=exercise)
    assert answers.keys() == names.keys()
    report = grade_notebook(learner(tmp_path, "00_intro", answers), workers=1)
    assert scores(report) == {"softmax": 2, "split_heads": 2, "masked_mean": 2}, \
        [(e.id, e.feedback[:300]) for e in report.exercises]
