"""Reading notebooks and their nbgrader cell metadata, for the grader.

A learner's answers are their answer cells (nbgrader ``solution`` cells), matched to the
authored ones by cell id, then by ``grade_id`` (see :func:`llmlab.grading.autograde.learner_cells`);
every other cell of the chapter comes from the authored notebook, so an edited or deleted test or
demo cell changes nothing.
"""

from __future__ import annotations

import nbformat
from nbformat import NotebookNode


class GradingError(RuntimeError):
    """Grading could not run (unreadable notebook, no authored twin, a broken chapter)."""


def grade_id(cell: NotebookNode) -> str | None:
    return cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")


def is_solution(cell: NotebookNode) -> bool:
    return bool(cell.get("metadata", {}).get("nbgrader", {}).get("solution"))


def exercise_of(cell: NotebookNode) -> str | None:
    """The exercise a graded or answer cell belongs to (``softmax__check`` -> ``softmax``)."""
    gid = grade_id(cell)
    return gid.split("__")[0] if gid else None


def read_notebook(path: str) -> NotebookNode:
    """Read and validate a notebook; GradingError with the reason if it is malformed."""
    try:
        nb = nbformat.read(path, as_version=4)
        nbformat.validate(nb)
    except FileNotFoundError:
        raise GradingError(f"{path}: no such notebook") from None
    except Exception as exc:  # JSON errors, schema errors, wrong encodings
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise GradingError(f"{path} is not a valid Jupyter notebook: {first}") from None
    return nb
