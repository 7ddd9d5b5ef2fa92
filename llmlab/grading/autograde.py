"""Grade a learner's notebook where the learner's code cannot reach the verdict.

``grade_notebook(path)``:

1. **Reference run** (:mod:`llmlab.grading.reference_run`): the chapter's authored notebook is
   executed once — no learner code — and records every check's cases and expected results
   (cached by the notebook's hash, so a class pays for it once).
2. **Judges** (:mod:`llmlab.grading.judge`): for each exercise, a fresh process — forked from a
   sandboxed server (:mod:`llmlab.grading.sandbox`, :mod:`llmlab.grading.judge_server`) that
   imported torch and the chapter's modules once — arms the exercise's block, runs the
   learner's cells, then the exercise's test cells on the recorded cases, and writes the
   learner's results in a safe format. A judge that dies, hangs or calls a blocked callable
   costs its own exercise only; one that stops before its tests (a learner's cell that exits or
   loops) is re-run once with the learner's cells reduced to their definitions.
3. **Verdict**, here, in the grader, which never runs learner code: each test cell scores its
   authored points when every recorded result matches the expected one (``explain``) and the
   cell ran to its end exactly once; otherwise 0, with the explanation as feedback.

Points come from the authored notebook, never from the submission's metadata; answers are the
learner's cells matched to the authored answer cells by cell id, then by ``grade_id``.
"""

from __future__ import annotations

import ast
import json
import os
import pickle
import re
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from nbformat import NotebookNode

from llmlab.grading.assemble import GradingError, exercise_of, grade_id, is_solution, read_notebook
from llmlab.grading.checks import GRADER_ENV, explain_grads, failure_text, inputs_failure, raises_failure
from llmlab.grading.compare import explain, match_mistake
from llmlab.grading.guard import BLOCKED_EXIT, message
from llmlab.grading.judge import TIMEOUT_EXIT
from llmlab.grading.judge_server import JudgePool, JudgeServer
from llmlab.grading.record import decode
from llmlab.grading.reference_run import (
    cache_key,
    expand_snapshot,
    run_reference,
    snapshot_modules,
    test_cells,
)
from llmlab.grading.sandbox import (
    Limits,
    Workspace,
    files_isolated,
    minimal_env,
    protected_paths,
)
from llmlab.grading.sandbox import report as sandbox_report

CACHE_ENV = "LLMLAB_GRADING_CACHE"
STARTUP_SECONDS = 90  # a judge's own start (interpreter, torch, the snapshot), on a busy machine
_MEMORY: dict[str, dict[str, Any]] = {}


@dataclass
class ExerciseResult:
    id: str
    score: float
    max_score: float
    feedback: str = ""


@dataclass
class GradeReport:
    notebook: str
    score: float
    max_score: float
    exercises: list[ExerciseResult] = field(default_factory=list)
    sandbox: dict[str, Any] = field(default_factory=dict)
    passed_cells: list[str] = field(default_factory=list)  # test cells that scored their points
    failed_cells: dict[str, str] = field(default_factory=dict)  # the others, and why

    def to_json(self) -> str:
        data = asdict(self)
        del data["passed_cells"], data["failed_cells"]
        return json.dumps(data, indent=2, ensure_ascii=False)

    def table(self, width: int = 100) -> str:
        """A plain-text table: one row per exercise, with the first line of feedback."""
        rows = [f"{self.notebook}: {self.score:g} / {self.max_score:g} points", ""]
        name_w = max([len("exercise")] + [len(e.id) for e in self.exercises])
        rows.append(f"{'exercise':<{name_w}}  points   max  result  feedback")
        for e in self.exercises:
            verdict = "pass" if e.score >= e.max_score else ("part" if e.score > 0 else "fail")
            first = e.feedback.splitlines()[0] if e.feedback else ""
            if len(first) > width:
                first = first[: width - 3] + "..."
            rows.append(f"{e.id:<{name_w}}  {e.score:>6g}  {e.max_score:>4g}  {verdict:<6}  {first}")
        for k, note in enumerate(self.sandbox.get("notes", [])):  # sandbox.weaker_guarantees
            rows.append(("\n" if k == 0 else "") + "note: " + note)
        return "\n".join(rows)


# ------------------------------------------------------------------ finding the chapter

def find_twin(path: Path, solutions: Path | None = None) -> Path:
    """The authored notebook of the chapter ``path`` belongs to (by its ``NN_`` folder prefix)."""
    roots = [solutions] if solutions else [_default_solutions()]
    roots = [r for r in roots if r is not None and r.is_dir()]
    if not roots:
        raise GradingError("cannot find the solutions/ folder: pass --solutions DIR")
    prefix = (path.parent.name if path.parent.name[:2].isdigit() else path.name)[:3]
    for root in roots:
        for folder in sorted(root.glob(f"{prefix}*")):
            twin = folder / f"{folder.name}.ipynb"
            if twin.exists():
                return twin
    raise GradingError(f"no chapter in {roots[0]} matches {path.name} (expected a folder {prefix}*)")


def _default_solutions() -> Path | None:
    here = Path(__file__).resolve().parents[2] / "solutions"
    return here if here.is_dir() else None


# ------------------------------------------------------------------ the reference run, cached

def _cache_dir() -> Path | None:
    """The on-disk cache of reference runs, only where no judge can see it (else None)."""
    value = os.environ.get(CACHE_ENV)
    if value == "0" or not files_isolated():
        return None
    return Path(value) if value else Path.home() / ".cache" / "llmlab" / "grading"


def reference(twin: Path, workspace: Workspace, timeout: int) -> dict[str, Any]:
    """The reference run's data for ``twin`` (memory, then disk cache, then a fresh run).

    The data holds every expected result, so nothing a judge can read holds it: the cache is
    kept on disk only where judges run in a private root that does not contain it
    (:func:`llmlab.grading.sandbox.files_isolated`), readable by the grader's user alone;
    elsewhere it stays in this process's memory. The reference run's own files (its record and
    its kernel's home, with the authored code in IPython's history) are removed as soon as it
    ends. The cache is JSON (the grader never unpickles it); a file whose key does not match is
    ignored.
    """
    key = cache_key(twin)
    if key in _MEMORY:
        return _MEMORY[key]
    folder = _cache_dir()
    path = folder / f"{twin.stem}-{key[:16]}.json" if folder else None
    if path and path.exists():
        try:
            data = json.loads(path.read_text())
            if data.get("key") == key:
                _MEMORY[key] = data
                return data
        except (OSError, ValueError):
            pass
    home, workdir = workspace.scratch("home-"), workspace.scratch("ref-")
    try:
        data = run_reference(twin, minimal_env(home), timeout=max(timeout, 300), workdir=workdir)
    finally:
        shutil.rmtree(home, ignore_errors=True)
        shutil.rmtree(workdir, ignore_errors=True)
    data["key"] = key
    _MEMORY[key] = data
    if path:
        _write_private(path, json.dumps(data))
    return data


def _write_private(path: Path, text: str) -> None:
    """Write ``path`` readable by this user alone (its folder too), atomically; best effort."""
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(path.parent, 0o700)
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        tmp.replace(path)
    except OSError:
        pass


# ------------------------------------------------------------------ the learner's cells

@dataclass
class LearnerCell:
    source: str
    position: int            # index in the authored notebook of the cell it is (or follows)
    exercise: str | None     # the exercise it answers, None for a cell the learner added


def learner_cells(learner: NotebookNode, authored: NotebookNode) -> list[LearnerCell]:
    """The learner's code: answer cells (matched by cell id, then grade_id) and added cells.

    Copies of the chapter's other cells (demos, tests) are not the learner's code and are left
    out: the chapter's own version is what runs.
    """
    by_id = {c.get("id"): i for i, c in enumerate(authored.cells) if c.get("id")}
    answers = {grade_id(c): i for i, c in enumerate(authored.cells)
               if is_solution(c) and c.cell_type == "code"}
    claimed: set[int] = set()
    out: list[LearnerCell] = []
    position = -1
    for cell in learner.cells:
        index = by_id.get(cell.get("id"))
        if index is None and grade_id(cell) in answers and answers[grade_id(cell)] not in claimed:
            index = answers[grade_id(cell)]
        if index is not None and index not in claimed:
            claimed.add(index)
            position = index
            source_cell = authored.cells[index]
            if is_solution(source_cell) and source_cell.cell_type == "code":
                out.append(LearnerCell(cell.source, index, exercise_of(source_cell)))
            continue
        if cell.cell_type == "code":
            out.append(LearnerCell(cell.source, position, None))
    exercise_ids = {c.get("id") for c in authored.cells if grade_id(c)} | set(answers)
    if not any(c.get("id") in exercise_ids or grade_id(c) in answers for c in learner.cells):
        raise GradingError("this notebook shares no cell with its chapter: is it a notebook of "
                           "another chapter, or was it rebuilt from scratch?")
    return out


DEFINITIONS = (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef,
               ast.Assign, ast.AnnAssign)


def definitions_only(source: str) -> str:
    """``source`` reduced to imports, definitions and assignments (for the second attempt)."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return ""
    tree.body = [n for n in tree.body if isinstance(n, DEFINITIONS)]
    return ast.unparse(tree)


# ------------------------------------------------------------------ running a judge

@dataclass
class JudgeRun:
    records: list[dict[str, Any]]
    status: str        # "ok", "timeout", "blocked", "crashed"
    reached_tests: bool
    blocked: str = ""


def _parse_records(raw: bytes) -> list[dict[str, Any]]:
    out = []
    for line in raw.split(b"\n"):
        line = line.strip()
        if not line.startswith(b"{"):
            continue
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict):
            out.append(rec)
    return out


def run_judge(job: dict[str, Any], server: JudgeServer, timeout: float) -> JudgeRun:
    """Run ``job`` in a fresh child of ``server`` and classify how it ended."""
    if os.environ.get("LLMLAB_JUDGE_DEBUG"):
        Path(os.environ["LLMLAB_JUDGE_DEBUG"]).write_bytes(pickle.dumps(job, protocol=5))
    raw, returncode, timed_out = server.run(job, timeout)
    records = _parse_records(raw or b"")
    # Markers count only from the judge itself: the first of each, in order.
    phases = [r.get("phase") for r in records if "phase" in r]
    reached = phases[:2] == ["learner", "tests"]
    blocked = next((str(r["blocked"]) for r in records if "blocked" in r), "")
    ended = any(r.get("end") is True for r in records)
    if timed_out or (returncode == TIMEOUT_EXIT and any(r.get("timeout") for r in records)):
        status = "timeout"
    elif returncode == BLOCKED_EXIT and blocked:
        status = "blocked"
    elif returncode == 0 and ended:
        status = "ok"
    else:
        status = "crashed"
    return JudgeRun(records, status, reached, blocked)


# ------------------------------------------------------------------ the verdict

def _why(run: JudgeRun, timeout: float) -> str:
    if run.status == "timeout":
        return (f"the code ran past its time limit ({timeout:.0f} s per cell) and was stopped: "
                "an infinite loop?")
    if run.status == "blocked":
        return message(run.blocked)
    return ("the code crashed the Python process running it (os._exit, sys.exit in a callback, a "
            "segfault, or more memory than the limit allows).")


def judge_cell(gid: str, entries: list[dict[str, Any]], records: list[dict[str, Any]],
               run: JudgeRun, timeout: float) -> str | None:
    """None when test cell ``gid`` passed; otherwise the feedback."""
    mine = [r for r in records if r.get("cell") == gid]
    terminal = [r for r in mine if "done" in r or "error" in r and "call" not in r]
    results: dict[tuple, list[dict[str, Any]]] = {}
    for r in mine:
        if "call" in r:
            results.setdefault((r.get("call"), r.get("case"), r.get("what")), []).append(r)
    if len(terminal) > 1 or any(len(v) > 1 for v in results.values()):
        return "✗ the test cell reported more than once: its results were tampered with."
    failure = next((m for k, e in enumerate(entries) if (m := _judge_call(k, e, results))), None)
    if not terminal:
        return _clean(failure if failure and "did not run" not in failure else _why(run, timeout))
    if "error" in terminal[0]:
        return _clean(failure if failure and "did not run" not in failure
                      else f"✗ the test cell failed: {terminal[0]['error']}")
    return _clean(failure) if failure else None


def _one(results: dict[tuple, list[dict[str, Any]]], key: tuple) -> dict[str, Any] | None:
    found = results.get(key, [])
    if len(found) > 1:
        return {"error": "reported more than once: its results were tampered with"}
    return found[0] if found else None


def _judge_call(k: int, entry: dict[str, Any], results: dict[tuple, list[dict[str, Any]]]) -> str | None:
    name, hint = entry.get("name") or "check", entry.get("hint")
    atol, rtol = entry.get("atol", 1e-5), entry.get("rtol", 1e-4)
    kind = entry["kind"]
    if kind == "module":
        init = _one(results, (k, "init", "init"))
        if init is None:
            return failure_text(name, "did not run.", None)
        if "error" in init:
            return failure_text(name, f"constructing it {init['error']}", hint)
        shapes = _one(results, (k, "shapes", "shapes"))
        if shapes is None or "error" in shapes:
            return failure_text(name, "its state_dict could not be read.", hint)
        got = {n: tuple(s) for n, s in decode(shapes["got"]).items()} \
            if isinstance(decode(shapes["got"]), dict) else decode(shapes["got"])
        want = {n: tuple(s) for n, s in entry["shapes"].items()}
        msg = explain(got, want, path="its parameters (name -> shape)")
        if msg:
            return failure_text(name, f"{msg} Name and shape them as the docstring says.", hint)
    for j, expected in enumerate(entry["expected"]):
        where = entry["notes"][j] if entry.get("notes") else ""
        prefix = f"{where}: " if where else ""
        rec = _one(results, (k, j if kind in ("function", "module") else 0, "out"))
        if rec is None:
            return failure_text(name, f"{prefix}did not run.", None)
        if "error" in expected and kind != "expect":
            got = decode(rec["got"]) if "got" in rec else None
            msg = raises_failure(expected["error"], rec.get("error"), rec.get("type"), got)
            if msg:
                return failure_text(name, f"{prefix}{msg}", hint)
            continue
        if "error" in rec:
            if kind == "expect":
                return failure_text(name, f"checking it raised: {rec['error']}", None)
            return failure_text(name, f"{prefix}{'forward ' if kind == 'module' else ''}{rec['error']}",
                                hint)
        got, want = decode(rec["got"]), decode(expected["value"])
        if kind == "expect":
            if got is not True:
                return failure_text(name, entry.get("message", "a condition is false"), None)
            continue
        path = name if kind == "value" else ("the output" if kind == "module" else "the result")
        msg = explain(got, want, atol, rtol, path=path)
        if msg:
            return failure_text(name, f"{prefix}{msg}{_named(entry, j, got, atol, rtol)}", hint)
        if kind == "function" and "inputs" in expected:
            after = _one(results, (k, j, "inputs"))
            if after is None or "error" in after:
                return failure_text(name, f"{prefix}its arguments could not be read after the "
                                    "call.", hint)
            msg = inputs_failure(decode(after["got"]), decode(expected["inputs"]),
                                 bool(expected.get("mutates")), atol, rtol)
            if msg:
                return failure_text(name, f"{prefix}{msg}", hint)
        if kind == "module" and entry["grads"][j] is not None:
            grads = _one(results, (k, j, "grads"))
            if grads is None or "error" in grads:
                return failure_text(name, f"{prefix}backward failed: "
                                    f"{(grads or {}).get('error', 'no gradients')}", hint)
            msg = explain_grads(decode(grads["got"]), decode(entry["grads"][j]), atol, rtol)
            if msg:
                return failure_text(name, f"{prefix}{msg}", hint)
    return None


def _named(entry: dict[str, Any], case: int, got: Any, atol: float, rtol: float) -> str:
    """The known mistake ``got`` is, from what the reference run recorded each wrong variant
    returning on this case (``mistake_text``, as the notebook's check says it); else ""."""
    outputs = {label: decode(values[case]) for label, values in entry.get("mistakes", [])
               if case < len(values) and values[case] is not None}
    return match_mistake(got, outputs, atol, rtol)


_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]|\x1b\[[0-9;?]*[A-Za-z]")


def _clean(text: str) -> str:
    """Feedback without terminal escapes or control characters, and not endless."""
    text = _CONTROL.sub("", text)
    return text if len(text) <= 2000 else text[:1997] + "..."


# ------------------------------------------------------------------ grading a notebook

def grade_notebook(path: str | Path, solutions: str | Path | None = None, timeout: int = 60,
                   limits: Limits | None = None, budget: float | None = None,
                   workers: int | None = None) -> GradeReport:
    """Grade ``path``. ``timeout``: seconds per cell; ``budget``: seconds for the whole grade
    (default: every judge's allowance, twice, over the workers); ``limits``: the judges'
    resources. Each exercise gets at most two judges (the second only when the first stopped
    before the tests)."""
    path = Path(path)
    learner = read_notebook(str(path))
    twin = find_twin(path, Path(solutions) if solutions else None)
    authored = read_notebook(str(twin))
    with Workspace() as workspace:
        return grade_against(learner, path.name, twin, authored, workspace, timeout,
                             limits, budget, workers)


def grade_against(learner: NotebookNode, label: str, twin: Path, authored: NotebookNode,
                  workspace: Workspace, timeout: int = 60, limits: Limits | None = None,
                  budget: float | None = None, workers: int | None = None,
                  pool: JudgePool | None = None) -> GradeReport:
    """Grade ``learner`` against ``authored`` (the notebook ``twin``). ``pool``: judge servers
    shared with other grades of the same chapter (:func:`judge_pool`); by default, this grade's
    own, closed when it ends."""
    cells = learner_cells(learner, authored)
    data = reference(twin, workspace, timeout)
    exercises = data["exercises"]
    n_workers = workers or max(1, min(2, os.cpu_count() or 1))

    def allowance(exercise: str) -> float:
        n_learner = sum(1 for c in cells if c.position < first_test.get(exercise, 10**9))
        return STARTUP_SECONDS + timeout * (len(exercises[exercise]) + n_learner + 1)

    first_test: dict[str, int] = {}
    for i, c in enumerate(authored.cells):
        if c in test_cells(authored):
            first_test.setdefault(grade_id(c).split("__")[0], i)
    if budget is None:
        budget = STARTUP_SECONDS + 2 * sum(map(allowance, exercises)) / n_workers
    deadline = time.monotonic() + budget
    limits = limits or (pool.limits if pool else default_limits(timeout))

    passed: list[str] = []
    failed: dict[str, str] = {}  # test cell -> why it scored nothing
    own_pool = pool is None
    if pool is None:
        # read-only where a private root is unavailable but namespaces are (see sandbox.launch)
        pool = JudgePool(workspace, limits, [*protected_paths(), Path.home()],
                         snapshot_modules(data))

    def grade_one(exercise: str) -> ExerciseResult:
        tests = exercises[exercise]
        max_score = sum(t["points"] for t in tests)
        before = [c.source for c in cells if c.position < first_test.get(exercise, 10**9)]
        job = {"exercise": exercise, "snapshot": expand_snapshot(data, exercise),
               "tests": [(t["gid"], t["source"]) for t in tests],
               "calls": {t["gid"]: [_for_judge(e) for e in data["calls"].get(t["gid"], [])]
                         for t in tests},
               "block": _block_for(data, tests), "learner": before, "cell_seconds": timeout}
        run = None
        server = pool.acquire()  # one fork server per worker: each exercise in a fresh child
        try:
            for _attempt in range(2):
                left = deadline - time.monotonic()
                if left <= 1:
                    break
                per_judge = min(left, allowance(exercise))
                run = run_judge(job, server, per_judge)
                if run.reached_tests:
                    break
                job["learner"] = [definitions_only(s) for s in before]  # second attempt
        finally:
            pool.release(server)
        if run is None:
            why = "not graded: the grading time budget was spent on the exercises before this one."
            failed.update((t["gid"], why) for t in tests)
            return ExerciseResult(exercise, 0.0, max_score, why)
        score, feedback = 0.0, ""
        if not run.reached_tests:
            feedback = "your notebook's code stopped the grader before the tests ran: " + \
                _why(run, timeout)
            failed.update((t["gid"], _clean(feedback)) for t in tests)
        else:
            for t in tests:
                verdict = judge_cell(t["gid"], data["calls"].get(t["gid"], []), run.records, run,
                                     timeout)
                if verdict is None:
                    score += t["points"]
                    passed.append(t["gid"])
                else:
                    failed[t["gid"]] = verdict
                    feedback = feedback or verdict
        return ExerciseResult(exercise, score, max_score, _clean(feedback))

    try:
        with ThreadPoolExecutor(max_workers=n_workers) as threads:
            results = list(threads.map(grade_one, list(exercises)))
    finally:
        if own_pool:
            pool.close()
    sandbox = sandbox_report(limits)
    return GradeReport(label, sum(r.score for r in results), sum(r.max_score for r in results),
                       results, sandbox, sorted(passed), failed)


def judge_pool(workspace: Workspace, data: dict[str, Any], timeout: int = 60,
               limits: Limits | None = None) -> JudgePool:
    """Judge servers for grading many notebooks of the chapter whose reference run is ``data``
    (a class): pass it to :func:`grade_against` as ``pool``, close it when done."""
    limits = limits or default_limits(timeout)
    return JudgePool(workspace, limits, [*protected_paths(), Path.home()], snapshot_modules(data))


def default_limits(timeout: int) -> Limits:
    return Limits(cpu_seconds=int(timeout * 4) + 10)


def _for_judge(entry: dict[str, Any]) -> dict[str, Any]:
    """What a judge needs of a recorded check: its kind and its cases. Never the expected
    results: learner code runs in the judge and could read anything the job holds."""
    return {k: entry[k] for k in ("kind", "payload") if k in entry}


def _block_for(data: dict[str, Any], tests: list[dict[str, Any]]) -> dict[str, list]:
    codes: dict[tuple[str, str, tuple[str, ...]], str] = {}
    paths: set[tuple[str, str]] = set()
    filenames: set[str] = set()
    for t in tests:
        for entry in data["calls"].get(t["gid"], []):
            block = entry.get("block", {})
            for q, c, names, n in block.get("codes", []):
                codes[(q, c, tuple(names))] = n
            paths |= {tuple(p) for p in block.get("paths", [])}
            filenames |= set(block.get("filenames", []))
    return {"codes": [[q, c, list(names), n] for (q, c, names), n in codes.items()],
            "paths": sorted(paths),
            "filenames": sorted(filenames)}


__all__ = ["ExerciseResult", "GradeReport", "GradingError", "find_twin", "grade_notebook",
           "GRADER_ENV"]
