"""Every benchmark runs end to end at its tiny size and writes its JSON and markdown results.

Timing is never asserted here: this only proves the benchmarks work (see bench/README.md).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BENCHES = sorted(p.stem for p in (ROOT / "bench").glob("bench_*.py"))


@pytest.mark.parametrize("name", BENCHES)
def test_benchmark_runs_tiny(name, tmp_path):
    proc = subprocess.run([sys.executable, "-m", f"bench.{name}", "--size", "tiny", "--out",
                           str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = list(tmp_path.glob("*.json"))
    assert results, "the benchmark wrote no results"
    for path in results:
        data = json.loads(path.read_text())
        assert data["rows"] and data["machine"]["cores"]
        assert path.with_suffix(".md").exists()
