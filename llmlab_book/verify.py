"""Grade every variant of a chapter's catalogue, as the grader and as the notebook's check see it.

    python -m llmlab_book.verify 00_intro [01_tokenization ...]   # a table; exit 1 on a problem

For chapter ``NN_topic`` (its :data:`CATALOGUE`, see :mod:`llmlab_book.catalogue`):

1. **Variant notebooks.** Each wrong variant is written into a copy of the learner's release
   (``chapters/NN_topic``) in place of its exercise's answer cell, the other answer cells holding
   the authored solutions. Variants of different exercises share a notebook (the *k*-th variant
   of every exercise in the *k*-th notebook), except where a variant reads a name another
   exercise's answer defines (a learner's own ``count_pairs``): that exercise then keeps its
   solution in the variant's notebook.
2. **The grader.** Each notebook is graded by :func:`llmlab.grading.autograde.grade_notebook`
   (the ``llmlab grade`` path: reference run, sandboxed judges, verdict), all of a chapter's
   notebooks sharing one reference run.
3. **The notebook.** The exercise's visible check cell runs on the variant the way a learner's
   notebook runs it (the chapter's namespace before the exercise, the answers, then the check,
   not in grading mode), in a separate process, and its output is kept.

A variant must lose every hidden point of its exercise, and its words must appear in the
grader's feedback and (unless only the hidden test can catch it) in the check's output. Each
variant notebook is also a partial solution: every exercise that holds its solution and reads
nothing a variant defines (:func:`dependents`) must keep all its points.
"""

from __future__ import annotations

import argparse
import ast
import base64
import contextlib
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nbformat

from llmlab.grading.assemble import exercise_of, grade_id, is_solution, read_notebook
from llmlab.grading.autograde import grade_against, judge_pool, learner_cells, reference
from llmlab.grading.reference_run import cell_names, expand_snapshot, test_cells
from llmlab.grading.sandbox import Workspace
from llmlab_book import chapter_module
from llmlab_book.catalogue import Catalogue, Mistake, answer_source

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Variant:
    """One catalogued mistake, written as the learner's answer cell."""

    exercise: str
    mistake: Mistake
    source: str
    needs: set[str] = field(default_factory=set)  # exercises whose answers it reads


@dataclass
class VariantResult:
    exercise: str
    mistake: Mistake
    score: float = 0.0
    max_score: float = 0.0
    lost_hidden: bool = False   # every hidden test cell of the exercise failed
    passed_check: bool = False  # the visible check cell passed
    feedback: str = ""          # the grader's feedback on the exercise
    notebook: str = ""          # what the visible check printed in the notebook
    others_lost: list[str] = field(default_factory=list)  # right answers beside it that lost points

    @property
    def named_by_grader(self) -> bool:
        return self.mistake.words in self.feedback

    @property
    def named_in_notebook(self) -> bool:
        return self.mistake.words in self.notebook

    def problems(self) -> list[str]:
        """How this variant breaks the catalogue's contract (empty when it keeps it)."""
        out = []
        if not self.lost_hidden:
            out.append("keeps hidden points: add a hidden case it fails")
        if self.mistake.hidden and not self.passed_check:
            out.append("is marked hidden=True but the visible check fails it")
        if not self.mistake.hidden and self.passed_check:
            out.append("passes the visible check: add a case to it, or mark the mistake hidden=True")
        if not self.named_by_grader:
            why = " (it calls what the exercise blocks)" if "blocked" in self.feedback else ""
            out.append(f"the grader's feedback does not contain its words{why}")
        if not self.mistake.hidden and not self.named_in_notebook:
            out.append("the notebook's check output does not contain its words")
        if self.others_lost:
            out.append(f"right answers beside it lost points: {', '.join(self.others_lost)}")
        return out


def chapter_paths(slug: str, root: Path = ROOT) -> tuple[Path, Path]:
    """(authored notebook, learner release) of chapter ``slug``."""
    return (root / "solutions" / slug / f"{slug}.ipynb", root / "chapters" / slug / f"{slug}.ipynb")


def catalogue_of(slug: str) -> Catalogue | None:
    module = chapter_module(slug)
    return getattr(module, "CATALOGUE", None) if module else None


def answer_cells(authored: nbformat.NotebookNode) -> dict[str, nbformat.NotebookNode]:
    return {exercise_of(c): c for c in authored.cells if is_solution(c) and c.cell_type == "code"}


def coverage(catalogue: Catalogue, authored: nbformat.NotebookNode, least: int = 2) -> list[str]:
    """Exercises with fewer than ``least`` mistakes, and catalogue entries of no exercise."""
    answers = answer_cells(authored)
    out = [f"{ex}: {len(catalogue.get(ex, ()))} mistake(s), at least {least} expected"
           for ex in answers if len(catalogue.get(ex, ())) < least]
    out += [f"{ex}: in the catalogue but not an exercise of the chapter" for ex in catalogue
            if ex not in answers]
    return out


def defined_name(cell: nbformat.NotebookNode) -> str:
    """The one function or class an answer cell defines."""
    names = [n.name for n in ast.parse(cell.source).body
             if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))]
    if len(names) != 1:
        raise ValueError(f"answer cell {grade_id(cell)} defines {names}: expected one function or class")
    return names[0]


def variants(catalogue: Catalogue, authored: nbformat.NotebookNode) -> list[Variant]:
    answers = answer_cells(authored)
    bound = {ex: (cell_names(c.source) or (set(), set()))[0] for ex, c in answers.items()}
    everything = set().union(*[(cell_names(c.source) or (set(), set()))[0]
                               for c in authored.cells if c.cell_type == "code"])
    out = []
    for ex, mistakes in catalogue.items():
        provided = frozenset(everything - bound[ex])
        for m in mistakes:
            source = answer_source(m.answer, defined_name(answers[ex]), provided)
            reads = (cell_names(source) or (set(), set()))[1]
            needs = {f for f, names in bound.items() if f != ex and names & reads}
            out.append(Variant(ex, m, source, needs))
    return out


def variant_sets(all_variants: list[Variant]) -> list[list[Variant]]:
    """Notebooks of variants that can be graded together: one variant per exercise, and none
    of an exercise another variant of the notebook reads the answer of."""
    sets: list[list[Variant]] = []
    for v in all_variants:
        for group in sets:
            exercises = {w.exercise for w in group}
            if v.exercise in exercises or v.needs & exercises or \
                    any(v.exercise in w.needs for w in group):
                continue
            group.append(v)
            break
        else:
            sets.append([v])
    return sets


def dependents(authored: nbformat.NotebookNode, exercises: set[str]) -> set[str]:
    """The other exercises whose answer or test cells read a name one of ``exercises``' answers
    defines, directly or through other answers: their grade may follow those answers'."""
    answers = answer_cells(authored)
    elsewhere = set().union(*[(cell_names(c.source) or (set(), set()))[0] for c in authored.cells
                              if c.cell_type == "code" and not is_solution(c)])
    defines = {ex: (cell_names(c.source) or (set(), set()))[0] - elsewhere for ex, c in answers.items()}
    reads: dict[str, set[str]] = {ex: set() for ex in answers}
    for c in authored.cells:
        if c.cell_type == "code" and exercise_of(c) in reads:
            reads[exercise_of(c)] |= (cell_names(c.source) or (set(), set()))[1]
    out = set(exercises)
    grown = True
    while grown:
        grown = False
        for ex in answers:
            if ex not in out and any(reads[ex] & defines[g] for g in out):
                out.add(ex)
                grown = True
    return out - set(exercises)


def variant_notebook(release: nbformat.NotebookNode, authored: nbformat.NotebookNode,
                     group: list[Variant]) -> nbformat.NotebookNode:
    """The release with the group's variants in their answer cells, solutions in the others."""
    nb = nbformat.from_dict(json.loads(json.dumps(release)))
    answers = {ex: c.source for ex, c in answer_cells(authored).items()}
    answers.update({v.exercise: v.source for v in group})
    for cell in nb.cells:
        if is_solution(cell) and cell.cell_type == "code" and exercise_of(cell) in answers:
            cell.source = answers[exercise_of(cell)]
    return nb


def verify_chapter(slug: str, root: Path = ROOT, timeout: int = 120) -> list[VariantResult]:
    """Grade and check every variant of chapter ``slug``'s catalogue (see the module doc)."""
    catalogue = catalogue_of(slug)
    if catalogue is None:
        raise ValueError(f"chapter {slug} has no catalogue (llmlab_book.ch{slug}.CATALOGUE)")
    twin, release_path = chapter_paths(slug, root)
    authored, release = read_notebook(str(twin)), read_notebook(str(release_path))
    groups = variant_sets(variants(catalogue, authored))
    tests = {ex: [grade_id(c) for c in test_cells(authored) if exercise_of(c) == ex] for ex in catalogue}
    first = {ex: min(i for i, c in enumerate(authored.cells) if grade_id(c) in gids)
             for ex, gids in tests.items()}
    notebooks = [variant_notebook(release, authored, group) for group in groups]
    results: list[VariantResult] = []
    # One reference run and one set of judge servers for every variant set, as for a class.
    with Workspace() as workspace, tempfile.TemporaryDirectory(prefix="llmlab-variants-") as tmp:
        data = reference(twin, workspace, timeout)
        jobs = []
        for group, nb in zip(groups, notebooks):
            cells = learner_cells(nb, authored)
            for v in group:
                check = next(g for g in tests[v.exercise] if g.endswith("__check"))
                jobs.append({"gid": check,
                             "check": next(c.source for c in authored.cells if grade_id(c) == check),
                             "learner": [c.source for c in cells if c.position < first[v.exercise]],
                             "snapshot": base64.b64encode(expand_snapshot(data, v.exercise)).decode()})
        pool = judge_pool(workspace, data, timeout)
        try:
            with start_checks(jobs, twin.parent, Path(tmp)) as outputs:  # runs while the grader does
                for k, (group, nb) in enumerate(zip(groups, notebooks)):
                    path = Path(tmp) / f"set{k}" / slug / f"{slug}.ipynb"
                    path.parent.mkdir(parents=True)
                    nbformat.write(nb, path)
                    report = grade_against(read_notebook(str(path)), path.name, twin, authored,
                                           workspace, timeout, pool=pool)
                    results += _variant_results(group, report, tests, authored)
        finally:
            pool.close()
    for result, output in zip(results, outputs.value):
        result.notebook = output
    return results


def _variant_results(group: list[Variant], report: Any, tests: dict[str, list[str]],
                     authored: nbformat.NotebookNode) -> list[VariantResult]:
    """What one variant set's grade says of each of its variants."""
    by_id = {e.id: e for e in report.exercises}
    wrong = {v.exercise for v in group}
    untouched = set(by_id) - wrong - dependents(authored, wrong)
    others_lost = sorted(ex for ex in untouched if by_id[ex].score < by_id[ex].max_score)
    results = []
    for v in group:
        hidden = [g for g in tests[v.exercise] if g.endswith("__hidden")]
        check = next(g for g in tests[v.exercise] if g.endswith("__check"))
        e = by_id[v.exercise]
        results.append(VariantResult(
            v.exercise, v.mistake, e.score, e.max_score,
            lost_hidden=bool(hidden) and not set(hidden) & set(report.passed_cells),
            passed_check=check in report.passed_cells, feedback=e.feedback,
            others_lost=others_lost if v is group[0] else []))
    return results


class _Outputs:
    value: list[str] = []


@contextlib.contextmanager
def start_checks(jobs: list[dict[str, Any]], cwd: Path, tmp: Path) -> Any:
    """Run each job's check cell as a learner's notebook runs it, in a child process started
    now; on leaving, its printed outputs are in ``.value`` (one per job, in order)."""
    src, out = tmp / "jobs.json", tmp / "out.json"
    src.write_text(json.dumps(jobs))
    env = {k: v for k, v in os.environ.items() if k != "LLMLAB_GRADER"}
    proc = subprocess.Popen([sys.executable, "-m", "llmlab_book.verify", "--run-checks", str(src),
                             str(out)], cwd=cwd, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    outputs = _Outputs()
    try:
        yield outputs
        _, err = proc.communicate(timeout=600)
        if proc.returncode != 0 or not out.exists():
            raise RuntimeError(f"running the checks failed: {err[-2000:]}")
        outputs.value = json.loads(out.read_text())
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _run_checks_here(src: Path, out: Path) -> None:
    """The child of :func:`run_checks`: the namespace the reference run saw before the
    exercise, the learner's cells, then the check cell, outside grading mode."""
    from llmlab.grading import checks
    from llmlab.grading.judge import load_namespace
    from llmlab.grading.reference_run import seed_cell

    os.environ.pop(checks.GRADER_ENV, None)
    checks._RECORDER = None
    outputs = []
    for job in json.loads(src.read_text()):
        ns = load_namespace(base64.b64decode(job["snapshot"]))
        buffer = io.StringIO()
        with contextlib.redirect_stdout(buffer), contextlib.redirect_stderr(io.StringIO()):
            for source in job["learner"]:
                try:
                    exec(compile(source, "<learner>", "exec"), ns)
                except Exception:  # an answer that fails to run is the check's to report
                    pass
            seed_cell(job["gid"])
            try:
                exec(compile(job["check"], "<check>", "exec"), ns)
            except Exception as exc:  # the check cell itself stopped: that is its output
                print(f"{type(exc).__name__}: {exc}")
        outputs.append(buffer.getvalue())
    out.write_text(json.dumps(outputs))


def table(results: list[VariantResult]) -> str:
    rows = []
    for r in results:
        flags = ("grader ✓" if r.named_by_grader else "grader ✗") + \
            ("" if r.mistake.hidden else (" notebook ✓" if r.named_in_notebook else " notebook ✗"))
        rows.append(f"{r.exercise:<20} {r.score:g}/{r.max_score:g}  {flags:<22} {r.mistake.label}")
        rows += [f"{'':<20} ! {p}" for p in r.problems()]
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("chapters", nargs="*", help="chapter folders, e.g. 00_intro")
    parser.add_argument("--run-checks", nargs=2, metavar=("JOBS", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.run_checks:
        _run_checks_here(Path(args.run_checks[0]), Path(args.run_checks[1]))
        return 0
    failed = False
    for slug in args.chapters:
        start = time.monotonic()
        results = verify_chapter(slug)
        named = sum(r.named_by_grader and (r.mistake.hidden or r.named_in_notebook) for r in results)
        print(f"{slug}: {len(results)} variants, {named} named in both places "
              f"({time.monotonic() - start:.0f} s)")
        print(table(results))
        problems = coverage(catalogue_of(slug), read_notebook(str(chapter_paths(slug)[0])))
        print("\n".join(f"! {p}" for p in problems))
        failed |= bool(problems) or any(r.problems() for r in results)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
