"""Shared helpers for the benchmarks: machine facts, side-by-side timing, result files.

Every benchmark measures llmlab and its peer in the same process, interleaved, and reports
speed-ups that read one way — peer time ÷ llmlab time, or llmlab throughput ÷ peer throughput,
so > 1 always means llmlab is faster (:func:`speedup`, :func:`speedup_label`) — with the machine
they ran on. Results are written as JSON (for tools) and
as a markdown table (for the book) under ``bench/results/``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

RESULTS = Path(__file__).resolve().parent / "results"


def git_commit() -> str:
    """The commit the numbers were measured at (``+dirty`` with uncommitted changes)."""
    root = Path(__file__).resolve().parent.parent
    try:
        sha = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=root, text=True,
                             capture_output=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=root, text=True, capture_output=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return (sha or "unknown") + ("+dirty" if sha and dirty else "")


def gpu_name() -> str | None:
    return torch.cuda.get_device_name() if torch.cuda.is_available() else None


def machine_info() -> dict[str, Any]:
    """What the numbers were measured on, and at which commit."""
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
        "gpu": gpu_name(),
        "commit": git_commit(),
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


def synchronize(device: torch.device | str) -> None:
    """Wait for the device's queued work (GPU kernels run asynchronously)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def spread(times: list[float]) -> dict[str, float]:
    """Median, min, max and relative spread ((max - min) / median) of timings in seconds."""
    med = statistics.median(times)
    return {"median": med, "min": min(times), "max": max(times),
            "spread": (max(times) - min(times)) / med if med else 0.0, "n": len(times)}


def interleaved(runs: dict[str, Callable[[], Any]], repeat: int, warmup: int = 1,
                device: torch.device | str = "cpu") -> dict[str, dict[str, float]]:
    """Time each run ``repeat`` times after ``warmup`` runs, in alternation (so load on a
    shared machine hits every run alike); returns :func:`spread` statistics per run."""
    for _ in range(warmup):
        for fn in runs.values():
            fn()
    synchronize(device)
    times: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(repeat):
        for k, fn in runs.items():
            start = time.perf_counter()
            fn()
            synchronize(device)
            times[k].append(time.perf_counter() - start)
    return {k: spread(v) for k, v in times.items()}


def speedup(ours: float, peer: float, kind: str) -> float:
    """How many times faster llmlab is: peer ÷ llmlab for a ``"time"`` (lower is better),
    llmlab ÷ peer for a ``"throughput"`` (higher is better). > 1 = llmlab faster."""
    if kind == "time":
        return peer / ours
    if kind == "throughput":
        return ours / peer
    raise ValueError(f"kind must be 'time' or 'throughput', got {kind!r}")


def speedup_label(peer: str) -> str:
    """The column heading every speed-up carries: the peer named, the direction stated."""
    return f"speed-up vs {peer} (>1 = llmlab faster)"


SPEEDUP_VS_PEER = speedup_label("peer")
SIZE_VS_PEER = "llmlab ÷ peer (memory, counts)"
SPEED_UNITS = {"s": "time", "ms": "time", "tok/s": "throughput", "MB/s": "throughput"}


def ratio_columns(ours: float, peer: float, unit: str) -> dict[str, Any]:
    """The two ratio columns of a llmlab-vs-peer row: a speed-up when ``unit`` is a time or a
    throughput (:data:`SPEED_UNITS`), else llmlab ÷ peer of a size or count; the other is "—"."""
    kind = SPEED_UNITS.get(unit)
    return {SPEEDUP_VS_PEER: speedup(ours, peer, kind) if kind else "—",
            SIZE_VS_PEER: "—" if kind else ours / peer}


def parser(description: str, threads: bool = False) -> argparse.ArgumentParser:
    """The standard benchmark arguments: ``--size tiny|full``, ``--out DIR``, ``--device``, and
    with ``threads`` a ``--threads N`` (default 1) that :func:`parse_args` applies to torch."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--size", choices=["tiny", "full"], default="full")
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--device", default="cpu",
                   help="cpu (default) or cuda: the GPU mode writes <name>_cuda results")
    if threads:
        p.add_argument("--threads", type=int, default=1,
                       help="torch threads (default 1: small ops do not split well across "
                            "cores, and one thread keeps timings steady)")
    return p


def parse_args(p: argparse.ArgumentParser) -> argparse.Namespace:
    """Parse, and set torch's thread count when the parser has ``--threads``."""
    args = p.parse_args()
    if getattr(args, "threads", None) is not None:
        if args.threads < 1:
            p.error(f"--threads must be at least 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    return args


def require_device(device: str) -> torch.device:
    """The device a benchmark asked for; a CUDA request without a GPU exits cleanly (code 0)."""
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        print(f"--device {device}: no CUDA GPU visible to torch {torch.__version__}; "
              "skipping (nothing written).")
        sys.exit(0)
    return dev


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
    where = f"{info['gpu']} + " if info["gpu"] and name.endswith("_cuda") else ""
    md.append(f"*Measured {info['date']} on {where}{info['cpu']} ({info['cores']} cores, torch "
              f"{info['torch']}, {info['torch_threads']} threads), size `{size}`, commit "
              f"`{info['commit']}`.*")
    path = out / f"{name}.md"
    path.write_text("\n".join(md) + "\n")
    return path
