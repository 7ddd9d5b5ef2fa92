"""Which cells the reference run executes: up to the last test cell, minus ``grading-skip`` demos.

The reference run is what a chapter's first grade waits for; a demonstration no exercise depends
on (an expensive table or sweep) is tagged ``grading-skip`` and left out, and a tag on a cell
the run needs is reported by ``tools/notebooks.py check``.
"""

from __future__ import annotations

import nbformat

from llmlab.grading.autograde import grade_notebook
from llmlab.grading.reference_run import SKIP_TAG, cell_names, reference_cells, skip_problems
from tests.platform.grading_fixture import MAX, NAME, RIGHT, authored, scores, submission


def test_cell_names_bound_at_top_level_and_read_as_globals():
    bound, read = cell_names(
        "import numpy as np\nfrom a.b import c\nrows = []\nfor i, x in enumerate(data):\n"
        "    rows.append(f(x))\n"
        "def g(y, k=K):\n    z = y + 1\n    return z * scale\n"
        "h = lambda q: q + offset\nsquares = [v * v for v in values]\n"
        "try:\n    pass\nexcept Exception as err:\n    pass\n")
    assert bound == {"np", "c", "rows", "i", "x", "g", "h", "squares", "err"}
    assert {"data", "f", "K", "scale", "offset", "values"} <= read
    assert not {"y", "z", "q", "v", "k"} & read  # parameters and locals are not the cell's names
    assert cell_names("%timeit f()") is None


def _cell(source: str, tags: list[str] | None = None, **nbgrader) -> nbformat.NotebookNode:
    cell = nbformat.v4.new_code_cell(source)
    if tags:
        cell.metadata["tags"] = tags
    if nbgrader:
        cell.metadata["nbgrader"] = {"grade_id": "ex__check", "grade": True, "solution": False,
                                     **nbgrader}
    return cell


def _notebook(*cells: nbformat.NotebookNode) -> nbformat.NotebookNode:
    return nbformat.v4.new_notebook(cells=list(cells))


def test_reference_cells_stop_at_the_last_test_and_leave_out_tagged_demos():
    nb = _notebook(_cell("x = 1"), _cell("table = slow()", [SKIP_TAG]),
                   nbformat.v4.new_markdown_cell("prose"), _cell("check(x)", points=1),
                   _cell("plot(table)"))
    assert reference_cells(nb) == [0, 3]
    assert skip_problems(nb) == []  # cell 4 reads the demo's table, but runs after the tests


def test_a_tag_the_reference_run_needs_is_reported():
    needed = _notebook(_cell("table = slow()", [SKIP_TAG]), _cell("check(table)", points=1))
    assert skip_problems(needed) == [
        f"cell 0 is tagged {SKIP_TAG} but cell 1, which the reference run executes, reads table"]
    exercise = _notebook(_cell("check(1)", [SKIP_TAG], points=1))
    assert skip_problems(exercise) == [f"cell 0 is an exercise's: it cannot be tagged {SKIP_TAG}"]
    magic = _notebook(_cell("%time slow()", [SKIP_TAG]), _cell("check(1)", points=1))
    assert "does not parse" in skip_problems(magic)[0]
    # a name the tagged cell reads but does not bind is not its concern
    fine = _notebook(_cell("x = 1"), _cell("print(x)", [SKIP_TAG]), _cell("check(x)", points=1))
    assert skip_problems(fine) == []


def test_skipped_cells_never_run_when_grading(tmp_path):
    """A tagged demo and a cell after the last test both raise if run: the solution still grades
    full marks, so neither ran in the reference run."""
    nb = authored()
    boom = "raise RuntimeError('the reference run must not execute this cell')"
    nb.cells.insert(3, _cell(f"demo_table = 1\n{boom}", [SKIP_TAG]))
    nb.cells.append(_cell(boom))
    assert skip_problems(nb) == []
    folder = tmp_path / "solutions" / NAME
    folder.mkdir(parents=True)
    nbformat.write(nb, folder / f"{NAME}.ipynb")
    report = grade_notebook(submission(tmp_path / "learner", RIGHT), tmp_path / "solutions")
    assert scores(report) == MAX


def test_a_cached_reference_run_is_reused_only_under_the_same_code(tmp_path, monkeypatch):
    """Cases pickle llmlab objects: a run recorded under other llmlab code must not be reused."""
    import llmlab.grading.reference_run as reference_run

    twin = tmp_path / "00_intro.ipynb"
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("import llmlab")]), twin)
    key = reference_run.cache_key(twin)
    assert reference_run.cache_key(twin) == key
    monkeypatch.setattr(reference_run, "_code_digest", lambda packages: "another version of llmlab")
    assert reference_run.cache_key(twin) != key
