"""What ``nbgrader autograde`` writes, from the hardened grader's verdicts.

``write_autograded(course, assignment, student, reports, authored)`` runs nbgrader's own
``Autograde`` converter on a student's submission with one change: its execution step — running
the learner's code in the process whose outputs decide the score, which one line of an answer
can exploit — is replaced by the verdicts :func:`llmlab.grading.autograde.grade_against`
reached in the grader. Everything else is nbgrader's: the copy into
``autograded/<student>/<assignment>/`` with the submission's files and ``timestamp.txt``, the
locked cells restored from the gradebook, the scores (``SaveAutoGrades``, which reads each test
cell's outputs: an error scores 0, anything else the cell's points), ``needs_manual_grade``
(only for cells the author marked for manual grading), and the late penalty
(``AssignLatePenalties``, per the course's ``LateSubmissionPlugin``). Around it:

- before nbgrader's sanitising, the submission's cells are aligned with the authored notebook
  the way the grader read them (:func:`align_to_authored`): an answer whose metadata was lost
  gets it back, a graded cell the student deleted comes back, and metadata a student added to
  a cell of their own is dropped;
- each test cell's output says what passed, or what failed: the case, expected vs got, the
  named mistake, as an error (:func:`verdict_outputs`);
- each answer cell's comment is its exercise's feedback (:func:`exercise_comment`), which
  formgrader shows and ``nbgrader generate_feedback`` renders;
- a similarity flag becomes the flag of the submitted notebook (formgrader's ``flagged``).

``mark_ungradable`` records a submission that could not be graded (and clears a stale grade).
"""

from __future__ import annotations

import copy
import logging
import shutil
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from nbformat import NotebookNode

from llmlab.grading.assemble import exercise_of, grade_id, is_solution

if TYPE_CHECKING:
    from llmlab.grading.autograde import GradeReport
    from llmlab.grading.classroom import Course

HIDDEN = "### BEGIN HIDDEN TESTS"


@contextmanager
def quiet_sqlalchemy() -> Iterator[None]:
    """nbgrader's models trigger SQLAlchemy warnings about its own relationships on every use;
    they say nothing to an instructor."""
    try:
        from sqlalchemy.exc import SAWarning
    except ImportError:  # pragma: no cover - nbgrader requires SQLAlchemy
        yield
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SAWarning)
        yield


def remove_outputs(c: Course, name: str, student: str) -> None:
    """The student's autograded copy and feedback of ``name`` (stale once regraded)."""
    for step in ("autograded_directory", "feedback_directory"):
        folder = c.path(step, student, name)
        shutil.rmtree(folder, ignore_errors=True)
        try:
            folder.parent.rmdir()  # the student's folder, when that was all it held
        except OSError:
            pass


def _nbgrader(cell: NotebookNode) -> dict[str, Any]:
    return cell.get("metadata", {}).get("nbgrader", {})


def is_test(cell: NotebookNode) -> bool:
    meta = _nbgrader(cell)
    return cell.cell_type == "code" and bool(meta.get("grade")) and not meta.get("solution")


def _points(n: float) -> str:
    return f"{n:g} point{'' if n == 1 else 's'}"


# ------------------------------------------------------------------ the notebook nbgrader reads

def align_to_authored(learner: NotebookNode, authored: NotebookNode) -> NotebookNode:
    """The submission with nbgrader metadata as the grader read it: a cell matched to an
    authored cell (by cell id, then an answer by ``grade_id``; the first match wins) carries
    that cell's metadata, any other cell none; graded and answer cells the submission lacks are
    put back after the cell they follow in the authored notebook (answers empty)."""
    nb = copy.deepcopy(learner)
    by_id = {c.get("id"): i for i, c in enumerate(authored.cells) if c.get("id")}
    answers = {grade_id(c): i for i, c in enumerate(authored.cells) if is_solution(c)}
    claimed: dict[int, int] = {}   # authored index -> index in nb
    for k, cell in enumerate(nb.cells):
        index = by_id.get(cell.get("id"))
        if index is None or index in claimed:
            index = answers.get(grade_id(cell))
        meta = cell.get("metadata", {})
        if index is None or index in claimed:
            meta.pop("nbgrader", None)
            continue
        claimed[index] = k
        twin = _nbgrader(authored.cells[index])
        if twin:
            meta["nbgrader"] = copy.deepcopy(twin)
        else:
            meta.pop("nbgrader", None)
    cells = list(nb.cells)
    placed = {i: cells[k] for i, k in claimed.items()}
    for i, cell in enumerate(authored.cells):
        if i in placed or not _nbgrader(cell).get("grade_id"):
            continue
        missing = copy.deepcopy(cell)
        if is_solution(cell):
            missing.source = ""
        if missing.cell_type == "code":
            missing.outputs, missing.execution_count = [], None
        before = [placed[j] for j in sorted(placed) if j < i]
        at = next((n for n, c in enumerate(cells) if c is before[-1]), -1) + 1 if before else 0
        cells.insert(at, missing)
        placed[i] = missing
    nb.cells = cells
    return nb


# ------------------------------------------------------------------ what the verdicts say

def cell_verdicts(report: GradeReport, authored: NotebookNode) -> dict[str, str | None]:
    """Test cell -> None when it scored its points, else why not."""
    out: dict[str, str | None] = {}
    for cell in authored.cells:
        gid = grade_id(cell)
        if gid and is_test(cell):
            out[gid] = None if gid in report.passed_cells else report.failed_cells.get(
                gid, "not graded: this cell was not part of the chapter's grading run.")
    return out


def _label(cell: NotebookNode) -> str:
    return "the hidden tests" if HIDDEN in cell.source else "the visible check"


def verdict_outputs(cell: NotebookNode, verdict: str | None) -> list[NotebookNode]:
    """The outputs of an autograded test cell: a stream when it passed, an error (which
    nbgrader scores 0) with the explanation when it did not."""
    from nbformat.v4 import new_output

    points = float(_nbgrader(cell).get("points") or 0)
    if verdict is None:
        return [new_output("stream", name="stdout",
                           text=f"✓ {_label(cell)} passed: {_points(points)}.\n")]
    text = f"{verdict}\n({_label(cell)}: 0 of {_points(points)})"
    return [new_output("error", ename="AssertionError", evalue=verdict.splitlines()[0],
                       traceback=text.splitlines())]


def exercise_comment(exercise: str, report: GradeReport, authored: NotebookNode) -> str:
    """The exercise's feedback for its answer cell: its score, then each test cell's verdict —
    what passed, what failed and why — so a partial score is explained."""
    verdicts = cell_verdicts(report, authored)
    result = next((e for e in report.exercises if e.id == exercise), None)
    tests = [c for c in authored.cells if is_test(c) and exercise_of(c) == exercise]
    if result is None or not tests:
        return ""
    lines = [f"{exercise}: {result.score:g} / {_points(result.max_score)}."]
    for cell in tests:
        points = float(_nbgrader(cell).get("points") or 0)
        verdict = verdicts.get(grade_id(cell))
        if verdict is None:
            lines.append(f"✓ {_label(cell).capitalize()} passed ({_points(points)}).")
        else:
            lines.append(f"✗ {_label(cell).capitalize()} failed (0 of {_points(points)}):")
            lines.append(verdict)
    return "\n".join(lines)


# ------------------------------------------------------------------ nbgrader's converter

def _preprocessors() -> tuple[type, type, type]:
    from nbgrader.preprocessors import NbGraderPreprocessor
    from traitlets import Dict

    class AlignToAuthored(NbGraderPreprocessor):
        """Runs first: the cells' nbgrader metadata as the grader read them."""

        authored = Dict()

        def preprocess(self, nb: NotebookNode, resources: dict) -> tuple[NotebookNode, dict]:
            twin = self.authored.get(resources["nbgrader"]["notebook"])
            return (align_to_authored(nb, twin) if twin is not None else nb), resources

    class WriteVerdicts(NbGraderPreprocessor):
        """In place of nbgrader's Execute: each test cell's outputs from the grader's verdict."""

        verdicts = Dict()

        def preprocess(self, nb: NotebookNode, resources: dict) -> tuple[NotebookNode, dict]:
            verdicts = self.verdicts.get(resources["nbgrader"]["notebook"], {})
            for cell in nb.cells:
                if cell.cell_type == "code":
                    cell.outputs, cell.execution_count = [], None
                if is_test(cell):
                    cell.outputs = verdict_outputs(cell, verdicts.get(
                        grade_id(cell), "not graded: this cell is not in the chapter."))
            return nb, resources

    class SaveFeedbackComments(NbGraderPreprocessor):
        """After nbgrader's SaveAutoGrades: each answer cell's comment is its exercise's
        feedback (in place of nbgrader's "No response." for an answer left as released: the
        feedback says what that cost)."""

        comments = Dict()

        def preprocess(self, nb: NotebookNode, resources: dict) -> tuple[NotebookNode, dict]:
            from nbgrader.api import Gradebook

            info = resources["nbgrader"]
            comments = self.comments.get(info["notebook"], {})
            with Gradebook(info["db_url"]) as gb:
                for cell in nb.cells:
                    gid = grade_id(cell)
                    if not (is_solution(cell) and comments.get(gid)):
                        continue
                    comment = gb.find_comment(gid, info["notebook"], info["assignment"],
                                              info["student"])
                    comment.auto_comment = comments[gid]
                gb.db.commit()
            return nb, resources

    return AlignToAuthored, WriteVerdicts, SaveFeedbackComments


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def write_autograded(course: Course, assignment: str, student: str,
                     reports: dict[str, GradeReport], authored: dict[str, NotebookNode],
                     flagged: set[str]) -> str | None:
    """Write the student's autograded submission and gradebook entries (see the module doc);
    ``flagged``: the notebooks (names without ``.ipynb``) to flag. None, or nbgrader's error."""
    from nbconvert.preprocessors import ClearMetadataPreprocessor
    from nbgrader.converters import Autograde
    from nbgrader.converters.base import NbGraderException
    from nbgrader.preprocessors import (
        AssignLatePenalties,
        CheckCellMetadata,
        IgnorePattern,
        LimitOutput,
        SaveAutoGrades,
    )

    align, write, save_comments = _preprocessors()
    verdicts = {nb: cell_verdicts(r, authored[nb]) for nb, r in reports.items()}
    comments = {nb: {grade_id(c): exercise_comment(exercise_of(c) or "", r, authored[nb])
                     for c in authored[nb].cells if is_solution(c)}
                for nb, r in reports.items()}
    coursedir = course.coursedir
    coursedir.assignment_id, coursedir.student_id, coursedir.notebook_id = \
        assignment, student, "*"
    log = logging.getLogger("llmlab.grading.autograded")
    log.propagate, log.level = False, logging.ERROR
    errors = _Collect()
    log.addHandler(errors)
    converter = Autograde(coursedir=coursedir, config=course.config, log=log)
    converter.force, converter.create_student = True, False
    converter.sanitize_preprocessors = [align(authored=authored),
                                        *converter.sanitize_preprocessors]
    converter.autograde_preprocessors = [
        write(verdicts=verdicts), IgnorePattern, ClearMetadataPreprocessor, LimitOutput,
        SaveAutoGrades, save_comments(comments=comments), AssignLatePenalties,
        CheckCellMetadata]
    try:
        with quiet_sqlalchemy():
            converter.start()
    except NbGraderException as exc:
        return "; ".join(errors.messages[:3]) or str(exc)
    finally:
        log.removeHandler(errors)
    with course.gradebook() as gb:
        for notebook in gb.find_submission(assignment, student).notebooks:
            if notebook.name in flagged:
                notebook.flagged = True
        gb.db.commit()
    return None


def mark_ungradable(course: Course, assignment: str, student: str, reason: str) -> None:
    """Record a submission that could not be graded: no autograded copy or feedback (a stale
    one is removed), 0 for every graded cell, the reason as every answer's comment, and the
    submission flagged for the instructor."""
    remove_outputs(course, assignment, student)
    submitted = course.path("submitted_directory", student, assignment)
    timestamp = course.coursedir.get_existing_timestamp(str(submitted))
    with course.gradebook() as gb:
        extra = {"timestamp": timestamp} if timestamp else {}
        submission = gb.update_or_create_submission(assignment, student, **extra)
        for notebook in submission.notebooks:
            for grade in notebook.grades:
                grade.auto_score, grade.needs_manual_grade = 0.0, False
            for comment in notebook.comments:
                comment.auto_comment = f"This submission could not be graded: {reason}"
            notebook.late_submission_penalty = None
            notebook.flagged = True
        gb.db.commit()
