"""How long grading takes: one learner notebook of each chapter, cold and warm, and a class.

What a learner waits for after ``llmlab grade`` and what an instructor waits for after
``llmlab grade --course``, each a fresh process as the user runs it:

- **cold**: the chapter's reference run included (an empty reference cache);
- **warm**: the reference cache on disk from an earlier grade (where judges run in a private
  root; elsewhere the cache lives in one process's memory and every grade is cold);
- **class**: ``llmlab grade --course`` on an nbgrader course of N students of one chapter
  (default: the chapter slowest to grade warm), from a cold cache, nbgrader's bookkeeping
  included.

The notebook graded is the authored one (every answer right), so every judge runs every test to
its end: the slowest case. The peer is the target the project sets (2 CPU cores): 30 s warm,
60 s cold per notebook, 10 min for a class of 30. Medians of repeats; the machine this runs on
may be shared, which the spread column shows, and the CPU time column says what the grade
itself used (a lower bound: on 2 idle cores, wall time is at least half of it).
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import parse_args, parser, spread, write_results

ROOT = Path(__file__).resolve().parent.parent
TARGETS = {"cold": 60.0, "warm": 30.0, "class": 600.0}


def _env(cache: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["LLMLAB_GRADING_CACHE"] = str(cache)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    return env


def cpu_seconds() -> float:
    """User + system CPU time of this process's reaped children (and of those they reaped)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def grade_once(notebook: Path, cache: Path) -> tuple[float, float, dict[str, Any]]:
    """Wall time and CPU time of one ``llmlab grade NOTEBOOK --json`` (a fresh process), and
    its report."""
    start, cpu = time.perf_counter(), cpu_seconds()
    proc = subprocess.run([sys.executable, "-m", "llmlab.cli", "grade", str(notebook), "--json"],
                          capture_output=True, text=True, env=_env(cache), timeout=1800)
    took, cpu = time.perf_counter() - start, cpu_seconds() - cpu
    if proc.returncode != 0:
        raise RuntimeError(f"grading {notebook.name} failed: {proc.stderr[-2000:]}")
    return took, cpu, json.loads(proc.stdout)


def chapter_rows(chapter: Path, work: Path, repeat: int) -> list[dict[str, Any]]:
    learner = work / chapter.name / f"{chapter.name}.ipynb"
    learner.parent.mkdir(parents=True)
    shutil.copy(chapter / f"{chapter.name}.ipynb", learner)
    cold, warm, report = [], [], {}
    cpu: dict[str, list[float]] = {"cold": [], "warm": []}
    for i in range(repeat):
        cache = work / f"cache-{chapter.name}-{i}"        # empty: the reference run included
        took, used, report = grade_once(learner, cache)
        cold.append(took)
        cpu["cold"].append(used)
    for _ in range(repeat):
        took, used, _ = grade_once(learner, cache)        # the last cold grade's cache
        warm.append(took)
        cpu["warm"].append(used)
    score = f"{report['score']:g} / {report['max_score']:g}"
    cached = bool(report.get("sandbox", {}).get("files_isolated"))
    rows = []
    for kind, times in (("cold", cold), ("warm", warm)):
        s = spread(times)
        rows.append({"what": f"{chapter.name} ({kind})", "score": score,
                     "median_s": round(s["median"], 1), "spread": round(s["spread"], 2),
                     "cpu_s": round(statistics.median(cpu[kind]), 1),
                     "n": s["n"], "target_s": TARGETS[kind],
                     "met": "yes" if s["median"] <= TARGETS[kind] else "no",
                     "cache_on_disk": cached})
    return rows


def class_row(chapter: Path, work: Path, students: int) -> dict[str, Any]:
    from llmlab.grading.course import run_nbgrader
    from llmlab.grading.sandbox import files_isolated

    course = work / "class"
    (course / "source" / chapter.name).mkdir(parents=True)
    shutil.copy(chapter / f"{chapter.name}.ipynb", course / "source" / chapter.name)
    (course / "nbgrader_config.py").write_text(
        "c = get_config()\nc.CourseDirectory.course_id = 'bench'\n"
        "c.ClearSolutions.code_stub = {'python': '# YOUR CODE HERE\\nraise NotImplementedError()'}\n")
    names = [f"s{i:02d}" for i in range(students)]
    (course / "roster.csv").write_text("id\n" + "".join(f"{n}\n" for n in names))
    run_nbgrader(["db", "student", "import", "roster.csv"], course, timeout=600)
    run_nbgrader(["generate_assignment", chapter.name], course, timeout=600)
    for name in names:
        folder = course / "submitted" / name / chapter.name
        folder.mkdir(parents=True)
        shutil.copy(chapter / f"{chapter.name}.ipynb", folder)
    start, cpu = time.perf_counter(), cpu_seconds()
    proc = subprocess.run([sys.executable, "-m", "llmlab.cli", "grade", "--course", str(course),
                           "--assignment", chapter.name, "--json"], capture_output=True,
                          text=True, env=_env(work / "cache-class"), timeout=7200)
    took, cpu = time.perf_counter() - start, cpu_seconds() - cpu
    if proc.returncode != 0:
        raise RuntimeError(f"grading the class failed: {proc.stderr[-2000:]}")
    rows = json.loads(proc.stdout)["assignments"][0]["students"]
    full = sum(1 for r in rows if r.get("raw_score") == r.get("max_score"))
    target = TARGETS["class"] * students / 30
    return {"what": f"class of {students}: {chapter.name} (cold)",
            "score": f"{full}/{students} full marks", "median_s": round(took, 1),
            "spread": 0.0, "cpu_s": round(cpu, 1), "n": 1, "target_s": target,
            "met": "yes" if took <= target else "no",
            "cache_on_disk": files_isolated()}  # written by the first grade, read by the rest


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--chapters", nargs="*", help="chapter folders to time (default: all; tiny: 00)")
    p.add_argument("--repeat", type=int, help="grades per chapter and kind (default 3; tiny 1)")
    p.add_argument("--students", type=int, help="class size (default 30; tiny 2)")
    p.add_argument("--class-chapter", help="the class's chapter (default: slowest warm)")
    args = parse_args(p)
    tiny = args.size == "tiny"
    chapters = sorted(c for c in (ROOT / "solutions").iterdir()
                      if c.is_dir() and (c / f"{c.name}.ipynb").exists())
    if args.chapters:
        chapters = [c for c in chapters if any(c.name.startswith(n) for n in args.chapters)]
    elif tiny:
        chapters = chapters[:1]
    repeat = args.repeat or (1 if tiny else 3)
    students = args.students or (2 if tiny else 30)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="llmlab-bench-grading-") as tmp:
        work = Path(tmp)
        for chapter in chapters:
            rows += chapter_rows(chapter, work, repeat)
            print(rows[-2], rows[-1], flush=True)
        warm = {r["what"].split(" ")[0]: r["median_s"] for r in rows if "(warm)" in r["what"]}
        name = args.class_chapter or max(warm, key=warm.get)
        chapter = next(c for c in chapters + sorted((ROOT / "solutions").iterdir())
                       if c.name.startswith(name))
        rows.append(class_row(chapter, work, students))
        print(rows[-1], flush=True)
    notes = ("Each grade is a fresh `llmlab grade` process grading the authored notebook (every "
             "answer right, every test run to its end); cold includes the chapter's reference "
             "run, warm reads its cache from disk. The class is `llmlab grade --course` on N "
             "copies, cold; its target scales as 10 min per 30 students. Medians of repeats; "
             "spread = (max - min) / median. cpu_s: the CPU time (user + system) of the grade "
             "and of the processes it reaped (a lower bound); on a shared machine, median_s far "
             "above cpu_s / 2 means the grade waited for the CPU.")
    write_results("grading", rows, args.out, title="Grading: one notebook (cold, warm), a class",
                  notes=notes, size=args.size)


if __name__ == "__main__":
    main()
