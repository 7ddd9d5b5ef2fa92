"""Shared helpers for the benchmarks: machine facts, side-by-side timing, result files.

Every benchmark measures llmlab and its peer in the same process, interleaved, and reports
ratios (llmlab ÷ peer) with the machine they ran on. Results are written as JSON (for tools) and
as a markdown table (for the book) under ``bench/results/``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

RESULTS = Path(__file__).resolve().parent / "results"


def machine_info() -> dict[str, Any]:
    """What the numbers were measured on."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "date": time.strftime("%Y-%m-%d"),
    }


def measure(fn: Callable[[], Any], repeat: int = 5, warmup: int = 1) -> float:
    """Median wall time of ``fn()`` in seconds over ``repeat`` runs after ``warmup`` runs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def parser(description: str) -> argparse.ArgumentParser:
    """The standard benchmark arguments: ``--size tiny|full`` and ``--out DIR``."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--size", choices=["tiny", "full"], default="full")
    p.add_argument("--out", type=Path, default=RESULTS)
    return p


def markdown_table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return ""
    cols = list(rows[0])
    fmt = lambda v: f"{v:.3g}" if isinstance(v, float) else str(v)  # noqa: E731
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(fmt(r.get(c, "")) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


def write_results(name: str, rows: list[dict[str, Any]], out: Path = RESULTS,
                  title: str = "", notes: str = "", size: str = "full") -> Path:
    """Write ``<out>/<name>.json`` and ``<out>/<name>.md``; return the markdown path."""
    out.mkdir(parents=True, exist_ok=True)
    info = machine_info()
    (out / f"{name}.json").write_text(json.dumps(
        {"benchmark": name, "size": size, "machine": info, "rows": rows}, indent=2))
    md = [f"### {title or name}", "", markdown_table(rows), ""]
    if notes:
        md += [notes, ""]
    md.append(f"*Measured {info['date']} on {info['cpu']} ({info['cores']} cores, torch "
              f"{info['torch']}, {info['torch_threads']} threads), size `{size}`.*")
    path = out / f"{name}.md"
    path.write_text("\n".join(md) + "\n")
    return path
