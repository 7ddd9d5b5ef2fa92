"""The ``llmlab`` command: ``llmlab grade`` and the commands the sub-packages register.

    llmlab grade chapters/00_intro/00_intro.ipynb [--json] [--out FILE] [--timeout 60] [--solutions DIR]
    llmlab grade --all chapters/ [--json]
    llmlab grade --course COURSE --assignment 01_tokenization   # an nbgrader course, as autograde
    llmlab grade --course COURSE --all [--student NAME ...]     # every assignment in source/

Exit status: 0 whenever grading ran (whatever the score), 1 when a notebook could not be graded
(malformed, no authored twin) or a course cannot be (no such assignment, not generated), 2 for
bad arguments. In a course, a submission that cannot be graded is marked in the gradebook and
reported; grading the others goes on, and the exit status is 0.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path

# Sub-packages that add their own commands through ``register(subparsers)``.
COMMAND_MODULES = ["llmlab.train.cli", "llmlab.serve.cli", "llmlab.evaluate.cli", "llmlab.agent.cli"]


def _write(path: str | None, text: str) -> None:
    """Results are written by the grader alone, after grading, replacing whatever was there."""
    if path:
        target = Path(path)
        tmp = target.with_name(f".{target.name}.tmp")
        tmp.write_text(text + "\n")
        tmp.replace(target)


GRADING_TOOLS = ("nbformat", "nbclient", "nbgrader", "ipykernel", "jupyter_client")


def _grade(args: argparse.Namespace) -> int:
    from llmlab.utils import missing_extra

    missing = missing_extra(GRADING_TOOLS, "grading", "llmlab grade")
    if missing:
        print(missing, file=sys.stderr)
        return 2
    from llmlab.grading.assemble import GradingError
    from llmlab.grading.autograde import grade_notebook

    if args.course:
        return _grade_course(args)
    if args.all is True:
        print("llmlab grade --all: give the folder of notebooks (or use --course)",
              file=sys.stderr)
        return 2
    if args.all:
        folder = Path(args.all)
        paths = sorted(p for p in folder.rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts)
        if not paths:
            print(f"no notebooks under {folder}", file=sys.stderr)
            return 1
    elif args.notebook:
        paths = [Path(args.notebook)]
    else:
        print("llmlab grade: give a notebook or --all DIR", file=sys.stderr)
        return 2
    reports, failed = [], 0
    for path in paths:
        try:
            report = grade_notebook(path, args.solutions, timeout=args.timeout)
        except GradingError as exc:
            failed += 1
            print(f"error: {exc}", file=sys.stderr)
            continue
        reports.append(report)
        if not args.json:
            print(report.table() + "\n")
    data = [json.loads(r.to_json()) for r in reports]
    text = json.dumps(data[0] if len(data) == 1 and not args.all else data, indent=2,
                      ensure_ascii=False)
    _write(args.out, text)
    if args.json:
        print(text)
    elif len(reports) > 1:
        total = sum(r.score for r in reports)
        print(f"total: {total:g} / {sum(r.max_score for r in reports):g} points")
    return 1 if failed else 0


def _grade_course(args: argparse.Namespace) -> int:
    from llmlab.grading.assemble import GradingError
    from llmlab.grading.classroom import grade_course

    if not args.assignment and args.all is not True:
        print("llmlab grade --course: give --assignment NAME (or --all: every assignment in "
              "source/)", file=sys.stderr)
        return 2
    try:
        summary = grade_course(Path(args.course), None if args.all is True else args.assignment,
                               timeout=args.timeout, students=args.student or None)
    except GradingError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    text = json.dumps(summary, indent=2, ensure_ascii=False)
    _write(args.out, text)
    if args.json:
        print(text)
        return 0
    for result in summary["assignments"]:
        print(f"{result['assignment']}:")
        for row in result["students"]:
            late = (f" ({row['raw_score']:g} - {row['late_penalty']:g} late penalty)"
                    if row.get("late_penalty") else "")
            score = (f"{row['score']:g} / {row['max_score']:g}{late}"
                     if "score" in row else "not graded")
            print(f"  {row['student']:<20} {score}"
                  + (f"   error: {row['error']}" if row.get("error") else ""))
        for flag in result["similarity"]:
            print(f"  flagged: {flag['student']} · {flag['exercise']} is the code of "
                  f"{flag['matches']}")
        for student in result["unknown_students"]:
            print(f"  not graded: submitted/{student} is not a student in the gradebook "
                  "(nbgrader db student add ...)", file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="llmlab", description="llmlab: the LLM stack, graded.")
    sub = parser.add_subparsers(dest="command", required=True)
    g = sub.add_parser("grade", help="autograde a learner notebook against its hidden tests")
    g.add_argument("notebook", nargs="?", help="the notebook to grade")
    g.add_argument("--all", metavar="DIR", nargs="?", const=True,
                   help="grade every notebook under DIR; with --course, every assignment")
    g.add_argument("--json", action="store_true", help="print JSON instead of a table")
    g.add_argument("--timeout", type=int, default=60, help="per-cell time limit in seconds")
    g.add_argument("--solutions", help="the folder of authored notebooks (default: the repo's)")
    g.add_argument("--out", help="also write the JSON result to this file (written by the grader "
                                 "only, after grading)")
    g.add_argument("--course", metavar="DIR", help="an nbgrader course: grade submitted/*/ASSIGNMENT, "
                                                   "write the gradebook and feedback/")
    g.add_argument("--assignment", action="append",
                   help="with --course: an assignment (chapter) to grade (repeatable)")
    g.add_argument("--student", action="append", help="with --course: only these students")
    g.set_defaults(func=_grade)
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name and name.startswith(exc.name):
                continue  # that layer is not installed in this checkout
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
