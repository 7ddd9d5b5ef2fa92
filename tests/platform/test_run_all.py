"""Every learner release runs top to bottom with no answers, as "Run All" runs it.

A learner who has answered nothing presses Run All: each unanswered exercise prints its ✗ and
the chapter goes on, the later cells falling back to llmlab's pieces, until the last cell. The
kernel runs as a learner's does (``LLMLAB_GRADER`` unset) and stops at the first error, as
JupyterLab does.
"""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest
from nbclient.exceptions import CellExecutionError

from llmlab.grading.runner import NotebookRunner

ROOT = Path(__file__).resolve().parents[2]
CHAPTERS = sorted(p.name for p in (ROOT / "chapters").glob("[0-9][0-9]_*")
                  if (p / f"{p.name}.ipynb").exists())


def run_all(path: Path, timeout: int = 600) -> tuple[int, int | None, str]:
    """Execute ``path`` top to bottom, stopping at the first error as "Run All" does: (number of
    cells, index of the cell that stopped it or None, its error)."""
    nb = nbformat.read(path, 4)
    env = {k: v for k, v in os.environ.items() if k != "LLMLAB_GRADER"}
    client = NotebookRunner(nb, timeout=timeout, kernel_name="python3", allow_errors=False,
                            resources={"metadata": {"path": str(path.parent)}})
    with client.setup_kernel(env=env):
        for index, cell in enumerate(nb.cells):
            try:
                client.execute_cell(cell, index)
            except CellExecutionError as exc:
                return len(nb.cells), index, f"{exc.ename}: {exc.evalue}"[:500]
    return len(nb.cells), None, ""


def check_reaches_the_end(name: str) -> None:
    total, stopped, error = run_all(ROOT / "chapters" / name / f"{name}.ipynb")
    assert stopped is None, f"chapters/{name}: Run All stops at cell {stopped} of {total}: {error}"


@pytest.mark.slow
@pytest.mark.parametrize("name", CHAPTERS)
def test_run_all_on_the_untouched_release_reaches_the_last_cell(name):
    check_reaches_the_end(name)
