"""Grade a learner's notebook with nbgrader against the hidden tests of its authored twin.

``grade_notebook(path)`` builds a temporary nbgrader course whose source is the chapter's
``solutions/`` notebook, generates the release (which records the hidden tests in the
gradebook), submits the learner's answers rebuilt into that release (see
:mod:`llmlab.grading.assemble`), runs ``nbgrader autograde`` (no Jupyter server) and reads the
score of every test cell. A cell that kills or hangs the kernel is found by a probe and the
exercise it belongs to is graded with its empty stub instead, so it loses only its own points.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import nbformat
from nbformat import NotebookNode
from nbgrader.utils import determine_grade

from llmlab.grading.assemble import (
    GradingError,
    assemble,
    drop_cell,
    exercise_of,
    grade_id,
    is_solution,
    read_notebook,
    stub_exercise,
)
from llmlab.grading.checks import GRADER_ENV
from llmlab.grading.course import NbgraderError, run_nbgrader, write_config
from llmlab.grading.probe import find_fatal_cell

STUDENT = "learner"


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

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, ensure_ascii=False)

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
        return "\n".join(rows)


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


def grade_notebook(path: str | Path, solutions: str | Path | None = None,
                   timeout: int = 60) -> GradeReport:
    """Grade ``path``; ``timeout`` is the per-cell limit in seconds."""
    path = Path(path)
    learner = read_notebook(str(path))
    twin = find_twin(path, Path(solutions) if solutions else None)
    name = twin.parent.name
    with tempfile.TemporaryDirectory(prefix="llmlab-grade-") as tmp:
        course = Path(tmp)
        write_config(course, f"sqlite:///{course / 'gradebook.db'}")
        (course / "solutions" / name).mkdir(parents=True)
        shutil.copy(twin, course / "solutions" / name / twin.name)
        try:
            run_nbgrader(["generate_assignment", name, "--force"], course, timeout=300)
        except (NbgraderError, TimeoutError) as exc:
            raise GradingError(f"could not prepare the chapter {name}: {exc}") from None
        release = nbformat.read(course / "chapters" / name / f"{name}.ipynb", 4)
        submission = assemble(learner, release)
        graded, isolated = _autograde_isolating(submission, release, read_notebook(str(twin)),
                                                course, name, timeout)
    return _report(path.name, graded, isolated)


def _autograde_isolating(submission: NotebookNode, release: NotebookNode, source: NotebookNode,
                         course: Path, name: str, timeout: int
                         ) -> tuple[NotebookNode, dict[str, str]]:
    isolated: dict[str, str] = {}
    n_graded = sum(1 for c in release.cells if grade_id(c) and not is_solution(c))
    budget = 300 + timeout * (2 * n_graded + 2)
    for _ in range(len(submission.cells) + 1):
        target = course / "submitted" / STUDENT / name
        target.mkdir(parents=True, exist_ok=True)
        nbformat.write(submission, target / f"{name}.ipynb")
        out = course / "autograded" / STUDENT / name / f"{name}.ipynb"
        try:
            run_nbgrader(["autograde", name, "--force", "--student", STUDENT,
                          f"--ExecutePreprocessor.timeout={timeout}", f"--Execute.timeout={timeout}"],
                         course, timeout=budget, extra_env={GRADER_ENV: "1"})
            if out.exists():
                return nbformat.read(out, 4), isolated
        except (NbgraderError, TimeoutError):
            pass
        fatal = find_fatal_cell(_with_hidden_tests(submission, source), course, timeout)
        if fatal is None:
            raise GradingError("nbgrader autograde failed, and no cell of the notebook is to blame")
        index, reason = fatal
        cell = submission.cells[index]
        exercise = exercise_of(cell)
        if cell.metadata.get("llmlab_added"):
            submission = drop_cell(submission, index)
            isolated[f"cell {index}"] = f"a cell you added {reason}; it was skipped."
        elif exercise and exercise not in isolated:
            submission = stub_exercise(submission, release, exercise)
            isolated[exercise] = (f"your code for this exercise {reason}; it was graded as "
                                  "unanswered so the rest of the notebook could run.")
        else:
            raise GradingError(f"cell {index} of the chapter itself {reason}")
    raise GradingError("grading did not converge")


def _with_hidden_tests(nb: NotebookNode, source: NotebookNode) -> NotebookNode:
    tests = {grade_id(c): c.source for c in source.cells if grade_id(c) and not is_solution(c)}
    out = nbformat.from_dict(nb)
    for cell in out.cells:
        if grade_id(cell) in tests:
            cell.source = tests[grade_id(cell)]
    return out


def _cell_feedback(cell: NotebookNode) -> str:
    for out in cell.get("outputs", []):
        if out.get("output_type") == "error":
            if out.get("ename") == "KeyboardInterrupt":
                return "the cell ran past its time limit and was interrupted: an infinite loop?"
            value = (out.get("evalue") or "").strip()
            return value if value.startswith("✗") else f"{out.get('ename')}: {value}"
    return ""


def _report(notebook: str, graded: NotebookNode, isolated: dict[str, str]) -> GradeReport:
    results: dict[str, ExerciseResult] = {}
    for cell in graded.cells:
        exercise = exercise_of(cell)
        if exercise is None:
            continue
        res = results.setdefault(exercise, ExerciseResult(exercise, 0.0, 0.0))
        if is_solution(cell):
            error = _cell_feedback(cell)
            if error and not res.feedback:
                res.feedback = f"your answer cell failed: {error}"
            continue
        score, max_score = determine_grade(cell, None)
        res.score += float(score or 0)
        res.max_score += float(max_score or 0)
        if not res.feedback and (score or 0) < (max_score or 0):
            res.feedback = _cell_feedback(cell) or "a test failed"
    for exercise, why in isolated.items():
        if exercise in results:
            results[exercise].feedback = why
    exercises = [r for r in results.values() if r.max_score > 0]
    return GradeReport(notebook, sum(e.score for e in exercises), sum(e.max_score for e in exercises),
                       exercises)
