"""Shared test setup: strict grading checks, the repository root, nbgrader on PATH."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Checks raise on failure (as under the grader), so notebook cells fail for nbval too.
os.environ["LLMLAB_GRADER"] = "1"
os.environ.setdefault("PYTHONHASHSEED", "0")
# nbgrader shells out to alembic, which lives next to this interpreter.
os.environ["PATH"] = str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", "")


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT
