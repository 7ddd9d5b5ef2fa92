"""The notebook pipeline: solutions/ is built from its scripts, executed in order, and released
to chapters/ with nothing of the solutions left in; every chapter grades full marks solved and
zero unsolved."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools"))

import notebooks  # noqa: E402

from llmlab.chapters import list_chapters  # noqa: E402
from llmlab.grading.autograde import grade_notebook  # noqa: E402

CHAPTERS = [p.name for p in notebooks.chapters()]
MACHINE_PATH = re.compile(r"(/root/|/home/\w|/tmp/|/work/|/Users/\w|[A-Z]:\\\\Users)")


def solution_nb(name: str) -> nbformat.NotebookNode:
    return nbformat.read(ROOT / "solutions" / name / f"{name}.ipynb", 4)


def release_nb(name: str) -> nbformat.NotebookNode:
    return nbformat.read(ROOT / "chapters" / name / f"{name}.ipynb", 4)


def test_there_are_chapters():
    assert CHAPTERS and CHAPTERS[0] == "00_intro"


def test_notebooks_match_their_scripts():
    assert notebooks.check() == []


@pytest.mark.parametrize("name", CHAPTERS)
def test_executed_in_order_without_machine_paths(name):
    counts = [c.execution_count for c in solution_nb(name).cells if c.cell_type == "code"]
    assert counts == list(range(1, len(counts) + 1)), "run the notebook top to bottom, once"
    for i, cell in enumerate(solution_nb(name).cells):
        for out in cell.get("outputs", []):
            text = str(out.get("text", "")) + str(out.get("data", {}).get("text/plain", ""))
            text += str(out.get("evalue", ""))
            assert not MACHINE_PATH.search(text), f"cell {i} output shows a machine path"


@pytest.mark.parametrize("name", CHAPTERS)
def test_chapter_states_title_budget_and_exercises(name):
    (chapter,) = [c for c in list_chapters(ROOT / "solutions") if c.slug == name]
    assert chapter.minutes <= 3 and chapter.ram_gb > 0
    nb = solution_nb(name)
    meta = [c.metadata.get("nbgrader", {}) for c in nb.cells]
    exercises = [m["grade_id"] for m in meta if m.get("solution")]
    assert exercises, "a chapter has graded exercises"
    for ex in exercises:
        points = {m["grade_id"]: m.get("points", 0) for m in meta if m.get("grade")}
        assert points.get(f"{ex}__check", 0) > 0, f"{ex}: a visible check cell with points"
        assert points.get(f"{ex}__hidden", 0) > 0, f"{ex}: a hidden test cell with points"
    for i, cell in enumerate(nb.cells):
        if cell.metadata.get("nbgrader", {}).get("solution"):
            above = next(c.source for c in reversed(nb.cells[:i]) if c.cell_type == "markdown")
            assert re.search(r"points?\b.*difficulty\s*[123].*min", above), \
                f"the markdown above {cell.metadata.nbgrader.grade_id} states points, difficulty, time"


def test_release_is_up_to_date(tmp_path):
    notebooks.release(tmp_path)
    for name in CHAPTERS:
        fresh = nbformat.read(tmp_path / name / f"{name}.ipynb", 4)
        committed = release_nb(name)
        assert notebooks.sources(fresh) == notebooks.sources(committed), \
            f"chapters/{name} is stale: run `make release`"


@pytest.mark.parametrize("name", CHAPTERS)
def test_release_leaks_nothing(name):
    assert notebooks.leaks(solution_nb(name), release_nb(name)) == []


def test_prose_keeps_outputs_and_refuses_changed_code(tmp_path):
    folder = tmp_path / "00_intro"
    folder.mkdir()
    script = folder / "00_intro.py"
    for suffix in (".py", ".ipynb"):
        source = ROOT / "solutions" / "00_intro" / f"00_intro{suffix}"
        (folder / source.name).write_bytes(source.read_bytes())
    saved = nbformat.read(folder / "00_intro.ipynb", 4)
    text = script.read_text()
    first_md = next(c.source for c in saved.cells if c.cell_type == "markdown").splitlines()[0]
    script.write_text(text.replace(f"# {first_md}\n", f"# {first_md} (edited)\n", 1))
    notebooks.prose(folder)
    edited = nbformat.read(folder / "00_intro.ipynb", 4)
    first = next(c.source for c in edited.cells if c.cell_type == "markdown")
    assert first.startswith(f"{first_md} (edited)")
    assert [c.get("outputs") for c in edited.cells] == [c.get("outputs") for c in saved.cells]
    script.write_text(text.replace("import torch\n", "import torch  # changed\n", 1))
    with pytest.raises(ValueError, match="code changed"):
        notebooks.prose(folder)


def test_a_pasted_solution_line_is_caught():
    source, release = solution_nb("00_intro"), release_nb("00_intro")
    line = "z = x - x.amax(dim=dim, keepdim=True)"
    assert line in "".join(c.source for c in source.cells)
    release.cells[-1].source += "\n" + line
    assert any(line in leak for leak in notebooks.leaks(source, release))
    hidden = next(c for c in source.cells if c.metadata.get("nbgrader", {}).get("grade_id", "")
                  .endswith("__hidden"))
    release.cells[0].source += "\n" + hidden.source
    assert any("HIDDEN" in leak for leak in notebooks.leaks(source, release))


@pytest.mark.parametrize("name", CHAPTERS)
def test_solution_grades_full_marks(name):
    report = grade_notebook(ROOT / "solutions" / name / f"{name}.ipynb", timeout=300)
    assert report.max_score > 0 and report.score == report.max_score, report.table()


@pytest.mark.parametrize("name", CHAPTERS)
def test_unsolved_release_grades_zero_with_feedback(name):
    report = grade_notebook(ROOT / "chapters" / name / f"{name}.ipynb", timeout=300)
    assert report.max_score > 0 and report.score == 0, report.table()
    assert all(e.feedback for e in report.exercises), report.table()


@pytest.mark.parametrize("name", CHAPTERS)
def test_every_listed_twin_is_really_blocked(name):
    """Each check cell's `block=[...]` (the chapter's registry of twins, beside its exercise):
    every listed llmlab/torch callable, and every method of a listed class, is blocked."""
    from llmlab.grading.autograde import reference
    from llmlab.grading.guard import unblocked
    from llmlab.grading.reference_run import resolve
    from llmlab.grading.sandbox import Workspace

    with Workspace() as ws:
        data = reference(ROOT / "solutions" / name / f"{name}.ipynb", ws, timeout=300)
    missed = {}
    for gid, entries in data["calls"].items():
        for entry in entries:
            objects = [resolve(*path) for path in entry.get("block", {}).get("paths", [])]
            if unblocked(objects):
                missed[gid] = unblocked(objects)
    assert not missed
