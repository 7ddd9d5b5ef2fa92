"""Per-exercise scores from an nbgrader gradebook, as an ``nbgrader export`` plugin.

    nbgrader export --exporter=llmlab.grading.export.ExerciseCsvExport --to exercises.csv

One row per assignment, student and exercise (an exercise's test cells share the ``grade_id``
prefix before ``__``: ``softmax__check`` and ``softmax__hidden`` are ``softmax``): the
exercise's score (manual grades override automatic ones, as in nbgrader's totals), its maximum,
and whether a cell of it still needs manual grading. A student without a submission scores 0;
``--assignment`` and ``--student`` select as for nbgrader's own export. The submission's late
penalty is in nbgrader's ``grades.csv``; these are raw scores.
"""

from __future__ import annotations

import csv
from typing import Any

from nbgrader.api import MissingEntry
from nbgrader.plugins import ExportPlugin

COLUMNS = ["assignment", "student_id", "notebook", "exercise", "score", "max_score",
           "needs_manual_grade"]


def exercise(grade_id: str) -> str:
    return grade_id.split("__")[0]


class ExerciseCsvExport(ExportPlugin):
    """CSV of per-exercise scores (see the module doc); ``--to`` defaults to exercises.csv."""

    def export(self, gradebook: Any) -> None:
        dest = self.to or "exercises.csv"
        students = [str(s) for s in self.student]
        assignments = [str(a) for a in self.assignment]
        self.log.info("Exporting per-exercise scores to %s", dest)
        with open(dest, "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(COLUMNS)
            for assignment in gradebook.assignments:
                if assignments and assignment.name not in assignments:
                    continue
                for student in gradebook.students:
                    if students and student.id not in students:
                        continue
                    for row in _rows(gradebook, assignment, student.id):
                        writer.writerow(row)


def _rows(gradebook: Any, assignment: Any, student: str) -> list[list[Any]]:
    try:
        submission = gradebook.find_submission(assignment.name, student)
    except MissingEntry:
        submission = None
    rows = []
    for notebook in sorted(assignment.notebooks, key=lambda n: n.name):
        totals: dict[str, list[Any]] = {}
        for cell in notebook.grade_cells:
            totals.setdefault(exercise(cell.name), [0.0, 0.0, False])[1] += cell.max_score
        if submission is not None:
            graded = next((n for n in submission.notebooks if n.name == notebook.name), None)
            for grade in graded.grades if graded is not None else []:
                total = totals.setdefault(exercise(grade.name), [0.0, 0.0, False])
                total[0] += grade.score or 0.0
                total[2] = total[2] or bool(grade.needs_manual_grade)
        for name, (score, max_score, manual) in sorted(totals.items()):
            rows.append([assignment.name, student, notebook.name, name, f"{score:g}",
                         f"{max_score:g}", str(manual).lower()])
    return rows
