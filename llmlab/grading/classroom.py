"""Grade a class: every submission of an nbgrader course, with the hardened grader.

``grade_course(course, assignment)`` is what ``llmlab grade --course DIR --assignment NAME`` runs.
It reads the course's ``nbgrader_config.py`` (source directory, submitted directory, gradebook
URL), grades ``submitted/<student>/<assignment>/*.ipynb`` against the authored notebook in
``source/<assignment>/`` exactly as ``llmlab grade`` does (reference run once for the class,
one sandboxed judge per exercise and student, verdicts in the grader), then writes:

- nbgrader's gradebook: each test cell's ``auto_score`` (so ``nbgrader export`` and formgrader
  see the grades) — run ``nbgrader generate_assignment`` first, as for ``nbgrader autograde``;
- ``feedback/<student>/<assignment>/<notebook>.html``: the score table and every message;
- a similarity report (``similarity.json`` in the assignment's feedback root) flagging answers
  whose code is llmlab's reference or the authored solution (see :mod:`llmlab.grading.similarity`).
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from llmlab.grading.assemble import GradingError, exercise_of, grade_id, is_solution, read_notebook
from llmlab.grading.autograde import GradeReport, grade_against, learner_cells, reference
from llmlab.grading.reference_run import resolve
from llmlab.grading.sandbox import Workspace
from llmlab.grading.similarity import similar, source_of


def course_settings(course: Path) -> dict[str, str]:
    """The directories and gradebook URL of the nbgrader course at ``course``."""
    settings = {"source": "source", "submitted": "submitted", "feedback": "feedback",
                "db_url": f"sqlite:///{course / 'gradebook.db'}"}
    config_file = course / "nbgrader_config.py"
    if config_file.exists():
        from traitlets.config.loader import PyFileConfigLoader

        config = PyFileConfigLoader(config_file.name, path=str(course)).load_config()
        cd = config.get("CourseDirectory", {})
        for key, trait in (("source", "source_directory"), ("submitted", "submitted_directory"),
                           ("feedback", "feedback_directory"), ("db_url", "db_url")):
            if trait in cd:
                settings[key] = str(cd[trait])
    return settings


def grade_course(course: Path, assignment: str, timeout: int = 60,
                 students: list[str] | None = None) -> dict[str, Any]:
    course = Path(course).resolve()
    s = course_settings(course)
    sources = sorted((course / s["source"] / assignment).glob("*.ipynb"))
    if not sources:
        raise GradingError(f"no authored notebook in {course / s['source'] / assignment}")
    rows: list[dict[str, Any]] = []
    flags: list[dict[str, Any]] = []
    with Workspace() as workspace:
        for twin in sources:
            authored = read_notebook(str(twin))
            references = _references(twin, authored, workspace, timeout)
            for folder in sorted((course / s["submitted"]).glob(f"*/{assignment}")):
                student = folder.parent.name
                if students and student not in students:
                    continue
                path = folder / twin.name
                row: dict[str, Any] = {"student": student, "notebook": twin.name}
                try:
                    learner = read_notebook(str(path))
                    report = grade_against(learner, twin.name, twin, authored, workspace, timeout)
                except GradingError as exc:
                    row.update(score=0.0, max_score=0.0, error=str(exc))
                    rows.append(row)
                    continue
                row.update(score=report.score, max_score=report.max_score)
                rows.append(row)
                _write_gradebook(s["db_url"], assignment, twin.stem, student, authored, report)
                _write_feedback(course / s["feedback"] / student / assignment /
                                f"{twin.stem}.html", student, report)
                for exercise, matches in _similarity(learner, authored, references).items():
                    flags.append({"student": student, "notebook": twin.name,
                                  "exercise": exercise, "matches": ", ".join(matches)})
    report_path = course / s["feedback"] / f"{assignment}-similarity.json"
    report_path.parent.mkdir(parents=True, exist_ok=True)
    report_path.write_text(json.dumps(flags, indent=2))
    return {"assignment": assignment, "students": rows, "similarity": flags}


def _references(twin: Path, authored: Any, workspace: Workspace, timeout: int) -> dict[str, dict[str, str]]:
    """Per exercise: label -> source of llmlab's references it blocks and of the authored answer."""
    data = reference(twin, workspace, timeout)
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


def _write_gradebook(db_url: str, assignment: str, notebook: str, student: str, authored: Any,
                     report: GradeReport) -> None:
    from nbgrader.api import Gradebook, MissingEntry

    verdicts = {e.id: e for e in report.exercises}
    with Gradebook(db_url) as gb:
        gb.update_or_create_student(student)
        try:
            gb.find_submission(assignment, student)
        except MissingEntry:
            gb.add_submission(assignment, student)
        for cell in authored.cells:
            gid = grade_id(cell)
            meta = cell.get("metadata", {}).get("nbgrader", {})
            if not gid or is_solution(cell) or not meta.get("grade"):
                continue
            grade = gb.find_grade(gid, notebook, assignment, student)
            passed = exercise_of(cell) in verdicts and gid in report.passed_cells
            grade.auto_score = float(meta.get("points") or 0) if passed else 0.0
        gb.db.commit()


def _write_feedback(path: Path, student: str, report: GradeReport) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = "".join(
        f"<tr><td>{html.escape(e.id)}</td><td>{e.score:g}</td><td>{e.max_score:g}</td>"
        f"<td><pre>{html.escape(e.feedback)}</pre></td></tr>" for e in report.exercises)
    path.write_text(
        f"<!doctype html><meta charset='utf-8'><title>{html.escape(report.notebook)}</title>"
        f"<h1>{html.escape(report.notebook)} — {html.escape(student)}</h1>"
        f"<p>{report.score:g} / {report.max_score:g} points</p>"
        f"<table border='1'><tr><th>exercise</th><th>points</th><th>max</th><th>feedback</th></tr>"
        f"{rows}</table>")
