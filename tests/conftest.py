"""Shared test setup: strict grading checks, the repository root, nbgrader on PATH."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# The suite runs as on an AVX2-only laptop, whatever this CPU has (README, "Supported CPUs"):
# saved notebook outputs must not depend on AMX/AVX-512 kernels, and precision="auto" must pick
# fp32. Set before torch is imported; notebook kernels and worker processes inherit it.
os.environ.setdefault("ATEN_CPU_CAPABILITY", "avx2")
os.environ.setdefault("ONEDNN_MAX_CPU_ISA", "AVX2")
os.environ.setdefault("MKL_ENABLE_INSTRUCTIONS", "AVX2")  # BLAS too, on Intel and AMD alike
# MKL otherwise uses fewer threads when the machine is busy, summing in another order.
os.environ.setdefault("MKL_DYNAMIC", "FALSE")
# Checks raise on failure (as under the grader), so notebook cells fail for nbval too.
os.environ["LLMLAB_GRADER"] = "1"
os.environ.setdefault("PYTHONHASHSEED", "0")
# nbgrader shells out to alembic, which lives next to this interpreter.
os.environ["PATH"] = str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", "")


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT



_CHAPTERS = {p.name for p in (ROOT / "solutions").glob("[0-9][0-9]_*") if p.is_dir()}
_PARAMETER = re.compile(r"\[([^\[\]]+)\]$")


def chapter_of(nodeid: str) -> str | None:
    """The chapter a test works on: its notebook's folder (nbval's cells of
    ``solutions/NN_topic/NN_topic.ipynb``), or a test's chapter parameter (``test_x[NN_topic]``)."""
    parts = nodeid.split("::", 1)[0].split("/")
    if len(parts) == 3 and parts[0] == "solutions" and parts[1] in _CHAPTERS:
        return parts[1]
    match = _PARAMETER.search(nodeid)
    return match.group(1) if match and match.group(1) in _CHAPTERS else None


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log):
    """``--dist loadfile`` with a chapter as one unit: a worker takes a chapter's notebook cells
    (nbval), its grading, catalogue and Run All tests together, so they share its reference run,
    and the chapters (the long tests) spread over the workers; every other test goes with the
    rest of its file."""
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class ChapterScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            chapter = chapter_of(nodeid)
            return f"chapter {chapter}" if chapter else nodeid.split("::", 1)[0]

    return ChapterScheduling(config, log)
