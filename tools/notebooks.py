"""Build, check and release the book's notebooks.

    python tools/notebooks.py build solutions/00_intro [...]   # .py -> executed .ipynb
    python tools/notebooks.py prose solutions/00_intro [...]   # .py's text -> .ipynb, no re-run
    python tools/notebooks.py check                            # every .ipynb matches its .py
    python tools/notebooks.py release                          # solutions/ -> chapters/ (nbgrader)

Each chapter is authored as a jupytext percent script ``solutions/NN_topic/NN_topic.py`` whose
exercise cells carry short metadata (``solution="id"``, ``check="id" points=N``,
``hidden="id" points=N``; see CONTRIBUTING.md). ``build`` turns that into nbgrader metadata,
executes the notebook top to bottom in its folder and saves it with outputs.
"""

from __future__ import annotations

import argparse
import copy
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

import jupytext
import nbformat

from llmlab.grading.runner import NotebookRunner

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from llmlab.grading.course import run_nbgrader, write_config  # noqa: E402
from llmlab.grading.reference_run import skip_problems  # noqa: E402

HIDDEN_BEGIN, HIDDEN_END = "### BEGIN HIDDEN TESTS", "### END HIDDEN TESTS"
SOLUTION_BLOCK = re.compile(r"### BEGIN SOLUTION\n(.*?)### END SOLUTION", re.DOTALL)
KERNEL = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}


def chapters(root: Path = ROOT / "solutions") -> list[Path]:
    """Chapter folders ``NN_topic`` that hold an authored script, in number order."""
    return sorted(p for p in root.glob("[0-9][0-9]_*") if (p / f"{p.name}.py").exists())


def nbgrader_meta(meta: dict) -> dict | None:
    """The nbgrader metadata for a cell's short exercise metadata (None for ordinary cells)."""
    base = {"schema_version": 3, "task": False}
    if "solution" in meta:
        return {**base, "grade": False, "solution": True, "locked": False,
                "grade_id": meta["solution"]}
    for kind in ("check", "hidden"):
        if kind in meta:
            if "points" not in meta:
                raise ValueError(f"cell {kind}={meta[kind]!r} needs points=N")
            return {**base, "grade": True, "solution": False, "locked": True,
                    "points": meta["points"], "grade_id": f"{meta[kind]}__{kind}"}
    return None


def from_script(script: Path) -> nbformat.NotebookNode:
    """Read a percent script into a notebook with nbgrader metadata and stable cell ids."""
    nb = jupytext.read(script)
    seen: set[str] = set()
    for i, cell in enumerate(nb.cells):
        meta = {k: v for k, v in cell.metadata.items() if k != "lines_to_next_cell"}
        grader = nbgrader_meta(meta)
        for key in ("solution", "check", "hidden", "points"):
            meta.pop(key, None)
        if grader:
            if grader["grade_id"] in seen:
                raise ValueError(f"{script}: duplicate exercise cell {grader['grade_id']}")
            seen.add(grader["grade_id"])
            meta["nbgrader"] = grader
            if grader["grade_id"].endswith("__hidden") and HIDDEN_BEGIN not in cell.source:
                cell.source = f"{HIDDEN_BEGIN}\n{cell.source}\n{HIDDEN_END}"
        cell.metadata = meta
        cell.id = grader["grade_id"].replace("__", "-") if grader else f"cell-{i:03d}"
    nb.metadata = {"kernelspec": KERNEL, "language_info": {"name": "python"}}
    return nb


def execute(nb: nbformat.NotebookNode, cwd: Path, timeout: int = 600) -> None:
    """Execute in a fresh kernel in ``cwd`` with the grader's strict checks switched on, on the
    CPU kernels the test suite compares outputs under (tests/conftest.py)."""
    os.environ["LLMLAB_GRADER"] = "1"
    os.environ["PYTHONHASHSEED"] = "0"
    for name, value in [("ATEN_CPU_CAPABILITY", "avx2"), ("ONEDNN_MAX_CPU_ISA", "AVX2"),
                        ("MKL_ENABLE_INSTRUCTIONS", "AVX2"), ("MKL_DYNAMIC", "FALSE")]:
        os.environ.setdefault(name, value)
    NotebookRunner(nb, timeout=timeout, kernel_name="python3",
                   resources={"metadata": {"path": str(cwd)}}).execute()
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
    widgets = nb.metadata.get("widgets")
    nb.metadata = {"kernelspec": KERNEL, "language_info": {"name": "python"}}
    if widgets:  # saved widget state, so the book renders widgets without a kernel
        nb.metadata["widgets"] = widgets


def build(folder: Path) -> Path:
    folder = folder.resolve()
    script = folder / f"{folder.name}.py"
    nb = from_script(script)
    execute(nb, folder)
    out = folder / f"{folder.name}.ipynb"
    nbformat.write(nb, out)
    print(f"built {out.relative_to(ROOT)}")
    return out


def prose(folder: Path) -> Path:
    """Carry edits of the script's markdown cells into the executed notebook without running it
    again: every code cell keeps its saved outputs. Refuses (ValueError) when a code cell or the
    cell layout changed, since those outputs would then no longer be the code's."""
    folder = folder.resolve()
    out = folder / f"{folder.name}.ipynb"
    shown = out.relative_to(ROOT) if out.is_relative_to(ROOT) else out
    new, old = from_script(folder / f"{folder.name}.py"), nbformat.read(out, 4)
    def code(nb: nbformat.NotebookNode) -> list:
        return [(c.cell_type, c.source if c.cell_type == "code" else "",
                 c.metadata.get("nbgrader", {}), c.metadata.get("tags", [])) for c in nb.cells]
    if code(new) != code(old):
        changed = next(i for i, (a, b) in enumerate(zip(code(new), code(old))) if a != b) \
            if len(new.cells) == len(old.cells) else "the cell count"
        raise ValueError(f"{shown}: code changed (cell {changed}); "
                         "run tools/notebooks.py build instead")
    for fresh, saved in zip(new.cells, old.cells):
        if fresh.cell_type == "code":
            fresh.outputs, fresh.execution_count = saved.outputs, saved.execution_count
    new.metadata = old.metadata
    nbformat.write(new, out)
    print(f"updated the text of {shown}")
    return out


def sources(nb: nbformat.NotebookNode) -> list[tuple[str, str, dict, list]]:
    return [(c.cell_type, c.source, c.metadata.get("nbgrader", {}), c.metadata.get("tags", []))
            for c in nb.cells]


def check() -> list[str]:
    """Problems: notebooks that do not match their scripts (or are missing), and cells tagged
    ``grading-skip`` that the reference run needs."""
    problems = []
    for folder in chapters():
        ipynb = folder / f"{folder.name}.ipynb"
        if not ipynb.exists():
            problems.append(f"{ipynb.relative_to(ROOT)} is missing: run tools/notebooks.py build")
            continue
        nb = nbformat.read(ipynb, 4)
        if sources(from_script(folder / f"{folder.name}.py")) != sources(nb):
            problems.append(f"{ipynb.relative_to(ROOT)} differs from its .py: rebuild it")
        problems += [f"{ipynb.relative_to(ROOT)}: {p}" for p in skip_problems(nb)]
    return problems


def release(dest: Path = ROOT / "chapters", names: list[str] | None = None) -> None:
    """Generate the learner release of every chapter into ``dest`` with nbgrader."""
    names = names or [p.name for p in chapters()]
    with tempfile.TemporaryDirectory() as tmp:
        course = Path(tmp)
        write_config(course, f"sqlite:///{course / 'gradebook.db'}")
        for name in names:
            src = ROOT / "solutions" / name / f"{name}.ipynb"
            (course / "solutions" / name).mkdir(parents=True)
            shutil.copy(src, course / "solutions" / name)
            run_nbgrader(["generate_assignment", name, "--force"], course, timeout=300)
            out = dest / name
            shutil.rmtree(out, ignore_errors=True)
            out.mkdir(parents=True)
            released = nbformat.read(course / "chapters" / name / f"{name}.ipynb", 4)
            nbformat.write(clean_release(released), out / f"{name}.ipynb")
            print(f"released {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}")


def leaks(source: nbformat.NotebookNode, release: nbformat.NotebookNode) -> list[str]:
    """What of the solutions a learner release gives away: markers, outputs, solution code and
    hidden-test lines (lines of 16+ characters that appear nowhere else in the chapter)."""
    found = []
    text = "\n".join(c.source for c in release.cells)
    for marker in ("BEGIN SOLUTION", "END SOLUTION", HIDDEN_BEGIN, HIDDEN_END):
        if marker in text:
            found.append(f"marker {marker!r}")
    found += [f"outputs in cell {i}" for i, c in enumerate(release.cells) if c.get("outputs")]
    def secret(cell: nbformat.NotebookNode) -> str:
        meta = cell.metadata.get("nbgrader", {})
        if meta.get("solution"):
            return "\n".join(SOLUTION_BLOCK.findall(cell.source))
        return cell.source if meta.get("grade_id", "").endswith("__hidden") else ""
    public = "\n".join(c.source for c in source.cells if not secret(c))
    for cell in source.cells:
        for line in secret(cell).splitlines():
            line = line.strip()
            if len(line) >= 16 and "HIDDEN TESTS" not in line and line not in public \
                    and line in text:
                found.append(f"line {line!r}")
    return found


def clean_release(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    nb = copy.deepcopy(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.execution_count = None
            cell.outputs = []
    return nb


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="convert and execute chapters (default: all)")
    b.add_argument("folders", nargs="*", type=Path)
    t = sub.add_parser("prose", help="carry markdown edits into executed notebooks, no re-run")
    t.add_argument("folders", nargs="+", type=Path)
    sub.add_parser("check", help="fail when a notebook differs from its script")
    r = sub.add_parser("release", help="regenerate chapters/ from solutions/")
    r.add_argument("--dest", type=Path, default=ROOT / "chapters")
    args = parser.parse_args(argv)
    if args.cmd == "build":
        # Chapter 00 lists every chapter's budget, so it is built after the others.
        for folder in args.folders or sorted(chapters(), key=lambda p: p.name == "00_intro"):
            build(folder)
    elif args.cmd == "prose":
        for folder in args.folders:
            prose(folder)
    elif args.cmd == "check":
        problems = check()
        print("\n".join(problems) or "all notebooks match their scripts")
        return 1 if problems else 0
    else:
        release(args.dest)
    return 0


if __name__ == "__main__":
    sys.exit(main())
