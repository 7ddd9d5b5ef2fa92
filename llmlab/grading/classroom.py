"""Grade a class: every submission of an nbgrader course, hardened, into what ``nbgrader
autograde`` writes.

``grade_course(course, assignments)`` is what ``llmlab grade --course DIR --assignment NAME``
(or ``--all``) runs. It reads the course's ``nbgrader_config.py`` as nbgrader does, checks up
front that every assignment was generated (``nbgrader generate_assignment`` records its cells
in the gradebook), grades each ``submitted/<student>/<assignment>/*.ipynb`` against the authored
notebook in ``source/<assignment>/`` exactly as ``llmlab grade`` does (a reference run once per
notebook, one sandboxed judge per exercise and student, verdicts in the grader), then lets
nbgrader's own ``Autograde`` converter write its outputs with its execution step replaced by
those verdicts (:mod:`llmlab.grading.autograded`):

- ``autograded/<student>/<assignment>/`` (the notebook, with each test cell's output saying
  what passed or what failed, and the submission's files and timestamp) and the gradebook:
  each test cell's score, each answer cell's comment (its exercise's feedback), the late
  penalty per the course's ``LateSubmissionPlugin.penalty_method`` and the assignment's due
  date, ``needs_manual_grade`` for the cells an author marked for manual grading only, and the
  similarity flag as the submitted notebook's ``flagged`` — so formgrader lists, opens and manually
  grades submissions, and ``nbgrader generate_feedback``, ``release_feedback`` and ``export``
  work unchanged;
- ``similarity/<assignment>.json``: answers whose code is llmlab's reference or the authored
  solution (:mod:`llmlab.grading.similarity`); regrading some students keeps the others' flags.

A submission that cannot be graded (not a valid notebook, another chapter's) is marked: its
autograded copy and feedback are removed, its scores set to 0 with the reason as comment, and
it is flagged. Folders under ``submitted/`` of students the gradebook does not know are
reported, not graded (add them with ``nbgrader db student add``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmlab.grading.assemble import GradingError, exercise_of, is_solution, read_notebook
from llmlab.grading.autograde import GradeReport, grade_against, judge_pool, learner_cells, reference
from llmlab.grading.autograded import quiet_sqlalchemy
from llmlab.grading.reference_run import resolve
from llmlab.grading.sandbox import Workspace
from llmlab.grading.similarity import similar, source_of


@dataclass
class Course:
    """An nbgrader course: its folder, its configuration and nbgrader's view of its folders."""

    root: Path
    config: Any        # traitlets Config, from the course's nbgrader_config.py
    coursedir: Any     # nbgrader.coursedir.CourseDirectory

    def path(self, step: str, student: str, assignment: str) -> Path:
        """``<step>/<student>/<assignment>`` under the course (``step``: a CourseDirectory
        folder trait, e.g. ``"submitted_directory"``), as nbgrader lays it out."""
        folder = getattr(self.coursedir, step)
        return Path(self.coursedir.format_path(folder, student, assignment))

    def source(self, assignment: str) -> list[Path]:
        return sorted(self.path("source_directory", ".", assignment).glob("*.ipynb"))

    @contextmanager
    def gradebook(self) -> Iterator[Any]:
        from nbgrader.api import Gradebook

        with quiet_sqlalchemy(), Gradebook(self.coursedir.db_url,
                                           self.coursedir.course_id) as gb:
            yield gb


def open_course(root: Path) -> Course:
    """The course at ``root``, configured by its ``nbgrader_config.py`` (if any)."""
    from nbgrader.coursedir import CourseDirectory
    from traitlets.config import Config
    from traitlets.config.loader import PyFileConfigLoader

    root = Path(root).resolve()
    if not root.is_dir():
        raise GradingError(f"{root}: no such course folder")
    config = Config()
    if (root / "nbgrader_config.py").exists():
        config = PyFileConfigLoader("nbgrader_config.py", path=str(root)).load_config()
    coursedir = CourseDirectory(config=config)
    coursedir.root = str(root)
    return Course(root, config, coursedir)


def assignments_in(course: Course) -> list[str]:
    """Every assignment of the course: the folders of ``source/`` that hold a notebook."""
    source = Path(course.coursedir.format_path(course.coursedir.source_directory, ".", "."))
    return sorted(p.name for p in source.iterdir() if p.is_dir() and any(p.glob("*.ipynb"))) \
        if source.is_dir() else []


def check_generated(course: Course, assignments: list[str]) -> None:
    """GradingError, before anything is graded, for an assignment nbgrader has not generated."""
    from nbgrader.api import MissingEntry

    for name in assignments:
        if not course.source(name):
            raise GradingError(f"no authored notebook in "
                               f"{course.path('source_directory', '.', name)}")
    with course.gradebook() as gb:
        for name in assignments:
            try:
                recorded = {nb.name for nb in gb.find_assignment(name).notebooks}
            except MissingEntry:
                recorded = set()
            missing = sorted({p.stem for p in course.source(name)} - recorded)
            if missing:
                raise GradingError(
                    f"the gradebook has no record of {name}/{missing[0]}.ipynb: run `nbgrader "
                    f"generate_assignment {name}` in {course.root} first (it records the cells "
                    "that grading scores), then grade again")


def grade_course(course: Path, assignments: list[str] | None = None, timeout: int = 60,
                 students: list[str] | None = None) -> dict[str, Any]:
    """Grade ``assignments`` (default: every assignment in ``source/``) of the course at
    ``course``; only ``students`` if given. A summary per assignment (see the module doc)."""
    c = open_course(Path(course))
    names = assignments or assignments_in(c)
    if not names:
        raise GradingError(f"no assignment in {c.path('source_directory', '.', '.')}")
    check_generated(c, names)
    with c.gradebook() as gb:
        known = {s.id for s in gb.students}
    with Workspace() as workspace:
        return {"course": str(c.root),
                "assignments": [_grade_assignment(c, name, known, students, workspace, timeout)
                                for name in names]}


def _grade_assignment(c: Course, name: str, known: set[str], only: list[str] | None,
                      workspace: Workspace, timeout: int) -> dict[str, Any]:
    from llmlab.grading.autograded import mark_ungradable, write_autograded

    submitted = sorted(p.name for p in Path(c.coursedir.format_path(
        c.coursedir.submitted_directory, ".", ".")).glob("*")
        if c.path("submitted_directory", p.name, name).is_dir())
    if only:
        submitted = [s for s in submitted if s in only]
    unknown = [s for s in submitted if s not in known]
    students = [s for s in submitted if s in known]
    reports: dict[str, dict[str, GradeReport]] = {s: {} for s in students}
    errors: dict[str, str] = {}
    flags: list[dict[str, Any]] = []
    authored_by_nb = {}
    for twin in c.source(name):
        authored = read_notebook(str(twin))
        authored_by_nb[twin.stem] = authored
        data = reference(twin, workspace, timeout)
        references = _references(data, authored)
        pool = judge_pool(workspace, data, timeout)
        try:
            for student in students:
                path = c.path("submitted_directory", student, name) / twin.name
                if student in errors or not path.exists():
                    continue  # a missing notebook scores 0 (nbgrader's rule)
                try:
                    learner = read_notebook(str(path))
                    reports[student][twin.stem] = grade_against(
                        learner, twin.name, twin, authored, workspace, timeout, pool=pool)
                except GradingError as exc:
                    errors[student] = str(exc)
                    continue
                for exercise, matches in _similarity(learner, authored, references).items():
                    flags.append({"student": student, "notebook": twin.name,
                                  "exercise": exercise, "matches": ", ".join(matches)})
        finally:
            pool.close()
    rows = []
    for student in students:
        if student in errors:
            mark_ungradable(c, name, student, errors[student])
        else:
            flagged = {Path(f["notebook"]).stem for f in flags if f["student"] == student}
            errors_here = write_autograded(c, name, student, reports[student], authored_by_nb,
                                           flagged)
            if errors_here:
                errors[student] = errors_here
        rows.append(_row(c, name, student, reports[student], errors.get(student)))
    similarity = _save_similarity(c, name, flags, regraded=set(students))
    return {"assignment": name, "students": rows, "unknown_students": unknown,
            "similarity": similarity}


def _row(c: Course, name: str, student: str, reports: dict[str, GradeReport],
         error: str | None) -> dict[str, Any]:
    from nbgrader.api import MissingEntry

    row: dict[str, Any] = {"student": student}
    with c.gradebook() as gb:
        try:
            sub = gb.find_submission(name, student)
        except MissingEntry:
            sub = None
        if sub is not None:
            row.update(score=sub.score - (sub.late_submission_penalty or 0.0),
                       raw_score=sub.score, max_score=sub.max_score,
                       late_penalty=sub.late_submission_penalty or 0.0,
                       timestamp=sub.timestamp.isoformat() if sub.timestamp else None,
                       flagged=any(nb.flagged for nb in sub.notebooks))
    row["exercises"] = {e.id: e.score for r in reports.values() for e in r.exercises}
    if error:
        row["error"] = error
    return row


def _save_similarity(c: Course, name: str, flags: list[dict[str, Any]],
                     regraded: set[str]) -> list[dict[str, Any]]:
    """The assignment's similarity report: this run's flags, and the earlier ones of students
    not regraded now."""
    path = c.root / "similarity" / f"{name}.json"
    try:
        earlier = json.loads(path.read_text()) if path.exists() else []
    except ValueError:
        earlier = []
    kept = [f for f in earlier if isinstance(f, dict) and f.get("student") not in regraded]
    merged = sorted(kept + flags, key=lambda f: (f["student"], f["notebook"], f["exercise"]))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(merged, indent=2))
    return merged


def _references(data: dict[str, Any], authored: Any) -> dict[str, dict[str, str]]:
    """Per exercise: label -> source of llmlab's references it blocks and of the authored answer."""
    out: dict[str, dict[str, str]] = {}
    for exercise, tests in data["exercises"].items():
        refs = out.setdefault(exercise, {})
        for t in tests:
            for entry in data["calls"].get(t["gid"], []):
                for module, qualname in entry.get("block", {}).get("paths", []):
                    try:
                        source = source_of(resolve(module, qualname))
                    except Exception:
                        continue
                    if source:
                        refs[f"{module}.{qualname}"] = source
    for cell in authored.cells:
        if is_solution(cell) and cell.cell_type == "code":
            out.setdefault(exercise_of(cell) or "", {})["the authored solution"] = cell.source
    return out


def _similarity(learner: Any, authored: Any, references: dict[str, dict[str, str]]) -> dict[str, list[str]]:
    flagged: dict[str, list[str]] = {}
    for cell in learner_cells(learner, authored):
        if cell.exercise and references.get(cell.exercise):
            hits = similar(cell.source, references[cell.exercise])
            if hits:
                flagged.setdefault(cell.exercise, []).extend(hits)
    return flagged
