"""The package stands without the notebook tooling: ``pip install llmlab`` pulls no Jupyter,
nbgrader or notebook client; every module imports without them but the few that need an extra
(the grader's notebook side, the HTTP server, the Triton kernels), which say which extra to
install; ``llmlab grade`` says it too."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
NOTEBOOK_TOOLING = {"nbformat", "nbclient", "nbgrader", "ipykernel", "jupyter-client", "ipywidgets",
                    "ipython", "jupyterlab", "notebook", "jupyter-server", "nbconvert", "jupytext"}
# The modules that need an extra: those that read, run or grade notebooks (`grading`), the HTTP
# server (`serve`) and the Triton kernels (`kernels`).
NEEDS_AN_EXTRA = re.compile(r"llmlab\.(chapters|grading\.(assemble|autograde|autograded|classroom|"
                            r"export|reference_run|runner)|serve\.server|kernels(\..*)?)$")


def _name(req: str) -> str:
    return re.sub(r"[-_.]+", "-", Requirement(req).name).lower()


def closure(requirements: list[str]) -> set[str]:
    """Every distribution ``requirements`` pull in, read from the installed distributions'
    metadata (their unconditional requirements: no extras)."""
    seen: set[str] = set()
    todo = [r for r in requirements if Requirement(r).marker is None or Requirement(r).marker.evaluate()]
    while todo:
        req = Requirement(todo.pop())
        name = _name(str(req))
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:  # required on another platform only: its name counts
            continue
        for sub in requires:
            r = Requirement(sub)
            if r.marker is None or r.marker.evaluate({"extra": ""}):
                todo.append(sub)
    return seen


def test_the_core_install_pulls_no_notebook_tooling():
    pulled = closure(PROJECT["dependencies"])
    assert "torch" in pulled and "numpy" in pulled  # the walk reaches the dependencies
    assert not pulled & NOTEBOOK_TOOLING, sorted(pulled & NOTEBOOK_TOOLING)


def test_the_grading_extra_brings_what_the_grader_imports():
    extras = PROJECT["optional-dependencies"]
    assert {"nbformat", "nbclient", "nbgrader", "ipykernel"} <= {_name(r) for r in extras["grading"]}
    assert "llmlab[grading,serve,agent]" in extras["lab"]


BLOCKER = """
import importlib, importlib.abc, pkgutil, sys
import importlib.util
BLOCK = {"nbformat", "nbclient", "nbgrader", "ipykernel", "jupyter_client", "ipywidgets",
         "IPython", "jupyterlab", "notebook", "jupyter_server", "nbconvert", "triton", "fastapi",
         "starlette", "uvicorn"}
class Blocked(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in BLOCK:
            raise ImportError("not installed: " + name)
sys.meta_path.insert(0, Blocked())
real_find_spec = importlib.util.find_spec
importlib.util.find_spec = lambda name, *a: None if name.split(".")[0] in BLOCK else real_find_spec(name, *a)
import llmlab
for m in pkgutil.walk_packages(llmlab.__path__, "llmlab.", onerror=lambda name: None):
    try:
        importlib.import_module(m.name)
    except ImportError as exc:
        print(m.name, "|", str(exc).replace("\\n", " "))
"""


def test_every_module_imports_without_the_extras_or_names_the_one_it_needs():
    out = subprocess.run([sys.executable, "-c", BLOCKER], capture_output=True, text=True,
                         cwd=ROOT, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    failed = dict(line.split(" | ", 1) for line in out.stdout.splitlines())
    assert [m for m in failed if not NEEDS_AN_EXTRA.match(m)] == []
    assert "llmlab.grading.autograde" in failed  # the blocker blocks
    assert "pip install 'llmlab[kernels]'" in failed["llmlab.kernels"]
    assert "pip install 'llmlab[serve]'" in failed["llmlab.serve.server"]


def test_llmlab_grade_names_the_extra_it_needs(monkeypatch, capsys):
    from llmlab import cli

    monkeypatch.setattr(cli, "GRADING_TOOLS", ("nbformat", "a_module_that_is_not_installed"))
    assert cli.main(["grade", "chapters/00_intro/00_intro.ipynb"]) == 2
    assert "pip install 'llmlab[grading]'" in capsys.readouterr().err
