"""Shared test setup: strict grading checks, the repository root, nbgrader on PATH."""

from __future__ import annotations

import os
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

