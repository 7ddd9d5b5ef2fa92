"""Put a learner's answers back into the authored notebook before grading.

nbgrader grades what it is given. To make grading robust to edits a learner should not make, the
submission is rebuilt from the chapter's release: every cell comes from the release (so an edited
or deleted test or demo cell is restored), answer cells (nbgrader ``solution`` cells) come from
the learner, matched by ``grade_id``, and cells the learner added stay where they were.
"""

from __future__ import annotations

import copy

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


def assemble(learner: NotebookNode, release: NotebookNode) -> NotebookNode:
    """The release with the learner's answer cells and added cells in it."""
    answers = {grade_id(c): c for c in learner.cells if is_solution(c) and c.cell_type == "code"}
    release_ids = {c.get("id") for c in release.cells}
    release_gids = {grade_id(c) for c in release.cells if grade_id(c)}
    # Cells the learner added (unknown ids, no grade_id of the release), keyed by the release
    # cell they follow, so they are put back after it.
    added: dict[str | None, list[NotebookNode]] = {}
    anchor: str | None = None
    for cell in learner.cells:
        known = cell.get("id") in release_ids or grade_id(cell) in release_gids
        if known:
            anchor = cell.get("id") if cell.get("id") in release_ids else _id_for(release, cell)
        elif cell.cell_type == "code":
            added.setdefault(anchor, []).append(_added_cell(cell))
    out = copy.deepcopy(release)
    cells = list(added.get(None, []))
    for cell in out.cells:
        if is_solution(cell) and grade_id(cell) in answers:
            cell.source = answers[grade_id(cell)].source
        cells.append(cell)
        cells.extend(added.get(cell.get("id"), []))
    out.cells = cells
    return out


def _id_for(release: NotebookNode, cell: NotebookNode) -> str | None:
    gid = grade_id(cell)
    return next((c.get("id") for c in release.cells if grade_id(c) == gid), None)


def _added_cell(cell: NotebookNode) -> NotebookNode:
    new = nbformat.v4.new_code_cell(cell.source)
    new.metadata["llmlab_added"] = True
    return new


def stub_exercise(nb: NotebookNode, release: NotebookNode, exercise: str) -> NotebookNode:
    """``nb`` with the learner's answer to ``exercise`` replaced by the release's stub."""
    stubs = {grade_id(c): c.source for c in release.cells if is_solution(c)}
    out = copy.deepcopy(nb)
    for cell in out.cells:
        if is_solution(cell) and exercise_of(cell) == exercise:
            cell.source = stubs[grade_id(cell)]
    return out


def drop_cell(nb: NotebookNode, index: int) -> NotebookNode:
    out = copy.deepcopy(nb)
    del out.cells[index]
    return out
