"""The reference run: the chapter's authored notebook, executed once, records what to expect.

No learner code runs here. The authored notebook (``solutions/NN_topic``) is executed in a fresh
kernel with the checks in recording mode; every check call in a test cell records:

- its cases (pickled, for the judge to call the learner's code on exactly these inputs),
- the expected results in the safe format of :mod:`llmlab.grading.record` (never pickled, so the
  grader reads them without running anything),
- what it blocks (the reference and the twins in ``block=[...]``), its tolerances, its hint,
- what each known wrong variant (``mistakes=``) returns on each case, so the grader names a
  mistake in the same words as the notebook's check (never sent to a judge).

It runs the cells up to the last test cell, except demonstrations the author tagged
``grading-skip`` (:func:`reference_cells`). Before the first test cell of each exercise it
snapshots the notebook's namespace (modules by name, functions by code, data pickled), minus
every name an answer cell defines, so the judge can run the exercise's test cells without
re-running the chapter. Each test cell starts from a seed derived from its id, here and in the
judge, so cases built inside a test cell are the same.
"""

from __future__ import annotations

import ast
import base64
import contextlib
import functools
import hashlib
import json
import marshal
import os
import pickle
import sys
import types
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nbformat

from llmlab.grading import checks
from llmlab.grading.checks import Case, changes_inputs, module_mistakes, mutable_inputs, param_grads
from llmlab.grading.compare import mistake_outputs
from llmlab.grading.guard import kernel_function, keys_for
from llmlab.grading.record import TooLarge, encode

FORMAT = 5
MAX_VALUE_BYTES = 64 << 20
_SKIP = {"In", "Out", "get_ipython", "exit", "quit", "_", "__", "___", "_ih", "_oh", "_dh",
         "_i", "_ii", "_iii", "__builtins__", "__builtin__", "__name__", "__doc__", "__package__",
         "__loader__", "__spec__"}


def cell_seed(grade_id: str) -> int:
    return int.from_bytes(hashlib.sha256(grade_id.encode()).digest()[:4], "little")


def seed_cell(grade_id: str) -> None:
    from llmlab.utils import seed_all

    seed_all(cell_seed(grade_id))


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def unb64(text: str) -> bytes:
    return base64.b64decode(text)


# ------------------------------------------------------------------- describing what to block

def resolve(module: str, qualname: str) -> Any:
    """The object at ``module.qualname`` (ImportError/AttributeError if there is none)."""
    import importlib

    found: Any = importlib.import_module(module)
    for part in qualname.split("."):
        found = getattr(found, part)
    return found


def importable_path(obj: Any) -> tuple[str, str] | None:
    """(module, qualname) that imports back to ``obj`` itself, or None."""
    candidates = []
    kernel = kernel_function(obj)
    if kernel is not None:  # a Triton kernel, named after its function
        candidates.append((kernel.__module__, kernel.__qualname__))
    owner = getattr(obj, "__objclass__", None)
    if owner is not None:
        candidates.append((owner.__module__, f"{owner.__qualname__}.{obj.__name__}"))
    module, qualname = getattr(obj, "__module__", None), getattr(obj, "__qualname__", None)
    if module and qualname:
        candidates.append((module, qualname))
    if module and getattr(obj, "__name__", None):
        candidates.append((module, obj.__name__))
    for module, qualname in candidates:
        if module == "__main__" or "<" in qualname:
            continue
        try:
            found = resolve(module, qualname)
        except Exception:
            continue
        if found is obj:
            return module, qualname
    return None


def describe_block(objects: list[Any]) -> dict[str, list]:
    keys = keys_for(objects)
    paths = [p for p in map(importable_path, objects) if p is not None]
    return {"codes": [[q, b64(c), list(names), n] for (q, c, names), n in keys.code.items()],
            "filenames": sorted(keys.filenames),
            "paths": [list(p) for p in paths],
            "names": keys.names()}


# ------------------------------------------------------------------- the kernel-side recorder

class ReferenceRecorder:
    """Installed as ``checks._RECORDER`` inside the reference kernel."""

    def __init__(self, out: str, exclude: list[str]) -> None:
        self.out, self.exclude = out, set(exclude)
        self.cell: str | None = None
        self.calls: dict[str, list[dict]] = {}
        self.snapshots: dict[str, str] = {}
        self.values: dict[str, str] = {}  # pickled values by digest, shared by the snapshots
        self.blocks: dict[str, dict[str, list]] = {}

    # -- cell boundaries
    def enter(self, grade_id: str, exercise: str, namespace: dict[str, Any]) -> None:
        self.cell = grade_id
        self.calls.setdefault(grade_id, [])
        if exercise not in self.snapshots:
            self.snapshots[exercise] = b64(zlib.compress(snapshot(namespace, self.exclude, self.values), 1))
        seed_cell(grade_id)

    def finish(self) -> None:
        data = {"calls": self.calls, "snapshots": self.snapshots, "values": self.values,
                "blocks": self.blocks}
        Path(self.out).write_text(json.dumps(data))

    def _add(self, entry: dict[str, Any], block: list[Any]) -> None:
        if self.cell is None:
            return
        entry["block"] = describe_block(block)
        self.calls[self.cell].append(entry)

    # -- the checks
    def check_function(self, fn, ref, cases, *, atol, rtol, hint, name, block, mistakes=None):
        cases = [Case.of(c) for c in cases]
        payload = pickle.dumps([(c.args, c.kwargs) for c in cases], protocol=5)
        expected = []
        for case in cases:
            args, kwargs = case.copy()
            result = _safe_call(ref, args, kwargs)
            after = mutable_inputs(ref, args, kwargs)
            if "value" in result and after:
                try:
                    result["inputs"] = encode(after)
                    result["mutates"] = changes_inputs(ref, case, after)
                except TooLarge:
                    pass
            expected.append(result)
        outputs = []
        if mistakes:
            with rng_kept():
                outputs = [mistake_outputs(mistakes, *c.copy()) for c in cases]
        self._add({"kind": "function", "name": name, "hint": hint, "atol": atol, "rtol": rtol,
                   "notes": [c.describe(i, len(cases)) for i, c in enumerate(cases)],
                   "payload": b64(payload), "expected": expected,
                   "mistakes": _encode_mistakes(mistakes, outputs)}, [ref, *block])

    def check_module(self, cls, ref_cls, init, inputs, *, atol, rtol, hint, name, grads, seed,
                     block, mistakes=None):
        import torch

        cases = [Case.of(c) for c in inputs]
        init_bytes = pickle.dumps(init, protocol=5)
        torch.manual_seed(seed)
        ref = ref_cls(**init)
        shapes = {k: list(v.shape) for k, v in ref.state_dict().items()}
        payload = pickle.dumps({"init": init_bytes, "state": ref.state_dict(), "seed": seed,
                                "grads": grads,
                                "inputs": [(c.args, c.kwargs) for c in cases]}, protocol=5)
        expected, expected_grads = [], []
        for case in cases:
            args, kwargs = case.copy()
            out = ref(*args, **kwargs)
            expected.append({"value": encode(out)})
            wants = grads and isinstance(out, torch.Tensor) and out.requires_grad
            expected_grads.append(encode(param_grads(ref, out)) if wants else None)
        outputs = []
        if mistakes:
            with rng_kept(), torch.no_grad():
                variants = module_mistakes(mistakes, init, ref.state_dict(), seed)
                outputs = [mistake_outputs(variants, *c.copy()) for c in cases]
        self._add({"kind": "module", "name": name, "hint": hint, "atol": atol, "rtol": rtol,
                   "notes": [c.describe(i, len(cases)) for i, c in enumerate(cases)],
                   "payload": b64(payload), "expected": expected, "grads": expected_grads,
                   "shapes": shapes, "mistakes": _encode_mistakes(mistakes, outputs)},
                  [ref_cls, *block])

    def check_value(self, got, expected, *, what, atol, rtol, hint, mistakes=None):
        self._add({"kind": "value", "name": what, "hint": hint, "atol": atol, "rtol": rtol,
                   "expected": [{"value": encode(expected)}],
                   "mistakes": _encode_mistakes(mistakes, [dict(mistakes or {})])}, [])

    def expect(self, condition, message, *, what):
        self._add({"kind": "expect", "name": what, "message": message,
                   "expected": [{"value": bool(condition)}]}, [])


@contextlib.contextmanager
def rng_kept() -> Iterator[None]:
    """Run something (the known wrong variants) without changing the random state the rest of
    the test cell sees: the judge, which never runs them, must build the same cases."""
    import random

    import numpy as np
    import torch

    states = random.getstate(), np.random.get_state(), torch.get_rng_state()
    try:
        yield
    finally:
        random.setstate(states[0])
        np.random.set_state(states[1])
        torch.set_rng_state(states[2])


def _encode_mistakes(mistakes: Any, outputs: list[dict[str, Any]]) -> list[list[Any]]:
    """``[[label, [value per case, or None where the variant raised]], ...]`` in the safe
    format; the variants ran with the random state restored, so later cases are unchanged."""
    out = []
    for label in mistakes or {}:
        values = []
        for case in outputs:
            try:
                values.append(encode(case[label]) if label in case else None)
            except TooLarge:
                values.append(None)
        out.append([str(label), values])
    return out


def _safe_call(ref: Any, args: Any, kwargs: Any) -> dict[str, Any]:
    try:
        return {"value": encode(ref(*args, **kwargs))}
    except Exception as exc:  # the expected result may be an error (bad input must raise)
        return {"error": type(exc).__name__}


def snapshot(namespace: dict[str, Any], exclude: set[str], values: dict[str, str]) -> bytes:
    """The namespace as the judge rebuilds it: modules by name, functions by code, data pickled.

    Pickled data goes to ``values`` (compressed, by digest) once for all of a notebook's
    snapshots; the snapshot names its digest (see :func:`expand_snapshot`)."""
    out: dict[str, tuple] = {}
    for name, value in list(namespace.items()):
        if name in _SKIP or name in exclude or name.startswith("_llmlab") or \
                (name.startswith("_i") and name[2:].isdigit()) or (name[:1] == "_" and name[1:].isdigit()):
            continue
        if isinstance(value, types.ModuleType):
            out[name] = ("module", value.__name__)
            continue
        if isinstance(value, types.FunctionType) and value.__module__ == "__main__":
            if value.__closure__ is None:
                try:
                    out[name] = ("function", marshal.dumps(value.__code__),
                                 pickle.dumps((value.__defaults__, value.__kwdefaults__)))
                except Exception:
                    pass
            continue
        if isinstance(value, type) and value.__module__ == "__main__":
            continue
        try:
            data = pickle.dumps(value, protocol=5)
        except Exception:
            continue
        if len(data) <= MAX_VALUE_BYTES:
            digest = hashlib.sha256(data).hexdigest()
            if digest not in values:
                values[digest] = b64(zlib.compress(data, 1))
            out[name] = ("value", digest)
    return pickle.dumps(out, protocol=5)


def expand_snapshot(data: dict[str, Any], exercise: str) -> bytes:
    """An exercise's snapshot with its values inlined: what the judge's ``load_namespace`` reads."""
    if not data["snapshots"].get(exercise):
        return b""
    entries = pickle.loads(zlib.decompress(unb64(data["snapshots"][exercise])))
    for name, entry in entries.items():
        if entry[0] == "value":
            entries[name] = ("pickle", zlib.decompress(unb64(data["values"][entry[1]])))
    return zlib.compress(pickle.dumps(entries, protocol=5), 1)


def snapshot_modules(data: dict[str, Any]) -> list[str]:
    """Every module the exercises' snapshots import: what a judge server imports up front."""
    names: set[str] = set()
    for packed in data["snapshots"].values():
        if packed:
            entries = pickle.loads(zlib.decompress(unb64(packed)))
            names |= {e[1] for e in entries.values() if e[0] == "module"}
    return sorted(names)


def bound_names(source: str) -> set[str]:
    """Names a cell binds at top level, except by import (imports hold no solution)."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return set()
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for t in targets:
                names |= {n.id for n in ast.walk(t) if isinstance(n, ast.Name)}
    return names


# ------------------------------------------------------------------- which cells the run needs

SKIP_TAG = "grading-skip"


class _Names(ast.NodeVisitor):
    """Names a cell binds at top level (any statement, not inside functions, classes or
    comprehensions) and global names it reads anywhere (a function's parameters and locals are
    not reads of the cell's names)."""

    def __init__(self) -> None:
        self.bound: set[str] = set()
        self.read: set[str] = set()
        self.scopes: list[set[str]] = []

    def visit_Name(self, node: ast.Name) -> None:
        if isinstance(node.ctx, ast.Load):
            if not any(node.id in scope for scope in self.scopes):
                self.read.add(node.id)
        elif not self.scopes:
            self.bound.add(node.id)

    def _scope(self, node: ast.AST, local: set[str], name: str | None = None) -> None:
        if name and not self.scopes:
            self.bound.add(name)
        self.scopes.append(local)
        self.generic_visit(node)
        self.scopes.pop()

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        for default in [*node.args.defaults, *node.args.kw_defaults, *node.decorator_list]:
            if default is not None:
                self.visit(default)
        node_args = node.args
        local = {a.arg for a in [*node_args.posonlyargs, *node_args.args, *node_args.kwonlyargs,
                                 node_args.vararg, node_args.kwarg] if a is not None}
        local |= {n.id for n in ast.walk(node) if isinstance(n, ast.Name)
                  and not isinstance(n.ctx, ast.Load)}
        if not self.scopes:
            self.bound.add(node.name)
        self.scopes.append(local)
        for statement in node.body:
            self.visit(statement)
        self.scopes.pop()

    visit_AsyncFunctionDef = visit_FunctionDef  # type: ignore[assignment]

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        self._scope(node, set(), node.name)

    def visit_Lambda(self, node: ast.Lambda) -> None:
        self._scope(node, {a.arg for a in ast.walk(node.args) if isinstance(a, ast.arg)})

    def _comprehension(self, node: ast.AST) -> None:
        targets = {n.id for g in node.generators for n in ast.walk(g.target)  # type: ignore[attr-defined]
                   if isinstance(n, ast.Name)}
        self._scope(node, targets)

    visit_ListComp = visit_SetComp = visit_DictComp = visit_GeneratorExp = _comprehension

    def visit_alias(self, node: ast.alias) -> None:
        if not self.scopes:
            self.bound.add((node.asname or node.name).split(".")[0])

    def visit_ExceptHandler(self, node: ast.ExceptHandler) -> None:
        if node.name and not self.scopes:
            self.bound.add(node.name)
        self.generic_visit(node)


def cell_names(source: str) -> tuple[set[str], set[str]] | None:
    """(names bound, names read) by a cell's code; None if it is not plain Python."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return None
    names = _Names()
    names.visit(tree)
    return names.bound, names.read


def _skipped(cell: nbformat.NotebookNode) -> bool:
    return SKIP_TAG in cell.get("metadata", {}).get("tags", [])


def reference_cells(nb: nbformat.NotebookNode) -> list[int]:
    """Indices of the code cells the reference run executes.

    The judges need the namespace before each exercise's tests and the tests' records, nothing
    after the last test cell; and the author may tag a demonstration no exercise depends on
    (an expensive table or sweep) ``grading-skip`` (:func:`skip_problems` checks the tag)."""
    tests = {id(c) for c in test_cells(nb)}
    last = max((i for i, c in enumerate(nb.cells) if id(c) in tests), default=-1)
    return [i for i, c in enumerate(nb.cells[: last + 1])
            if c.cell_type == "code" and not _skipped(c)]


def skip_problems(nb: nbformat.NotebookNode) -> list[str]:
    """Why a ``grading-skip`` tag is wrong: the cell is an exercise's, is not plain Python, or
    binds a name that a cell the reference run executes reads."""
    kept = {j: cell_names(nb.cells[j].source) for j in reference_cells(nb)}  # parsed once
    problems = []
    for i, cell in enumerate(nb.cells):
        if not (cell.cell_type == "code" and _skipped(cell)):
            continue
        names = cell_names(cell.source)
        if _meta(cell).get("grade") or _meta(cell).get("solution"):
            problems.append(f"cell {i} is an exercise's: it cannot be tagged {SKIP_TAG}")
        elif names is None:
            problems.append(f"cell {i} is tagged {SKIP_TAG} but does not parse as Python")
        else:
            for j, later in kept.items():
                if j < i:
                    continue
                used = sorted(names[0] & later[1]) if later else ["(a cell that does not parse)"]
                if used:
                    problems.append(f"cell {i} is tagged {SKIP_TAG} but cell {j}, which the "
                                    f"reference run executes, reads {', '.join(used)}")
                    break
    return problems


# ------------------------------------------------------------------- the driver (grader side)

def _meta(cell: nbformat.NotebookNode) -> dict[str, Any]:
    return cell.get("metadata", {}).get("nbgrader", {})


def test_cells(nb: nbformat.NotebookNode) -> list[nbformat.NotebookNode]:
    return [c for c in nb.cells if c.cell_type == "code" and _meta(c).get("grade")
            and not _meta(c).get("solution") and _meta(c).get("grade_id")]


def cache_key(twin: Path) -> str:
    """What a cached reference run must have been recorded under to be reused: the notebook, the
    cache format, Python, torch, and the code of llmlab and of the packages beside it that the
    notebook imports (its cases pickle their objects, which another version's classes may not
    unpickle into)."""
    raw = twin.read_bytes()
    h = hashlib.sha256(raw)
    packages = _imported_packages(nbformat.reads(raw.decode("utf-8"), 4))
    for part in (str(FORMAT), sys.version, _torch_version(), _code_digest(packages)):
        h.update(part.encode())
    return h.hexdigest()


def _imported_packages(nb: nbformat.NotebookNode) -> tuple[str, ...]:
    """``llmlab`` and the top-level packages the notebook's code imports that sit beside it."""
    beside = Path(__file__).resolve().parents[2]
    names = {"llmlab"}
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        try:
            tree = ast.parse(cell.source)
        except SyntaxError:
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names.update(a.name.split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names.add(node.module.split(".")[0])
    return tuple(sorted(n for n in names if (beside / n / "__init__.py").is_file()))


@functools.lru_cache(maxsize=8)
def _code_digest(packages: tuple[str, ...]) -> str:
    """sha256 over the sources of ``packages``, each a directory beside ``llmlab``."""
    h = hashlib.sha256()
    beside = Path(__file__).resolve().parents[2]
    for name in packages:
        for path in sorted((beside / name).rglob("*.py")):
            h.update(path.relative_to(beside).as_posix().encode())
            h.update(path.read_bytes())
    return h.hexdigest()


def _torch_version() -> str:
    try:
        import torch

        return torch.__version__
    except ImportError:
        return ""


def run_reference(twin: Path, env: dict[str, str], timeout: int, workdir: Path) -> dict[str, Any]:
    """Execute the authored notebook ``twin`` in recording mode; the recorded data (JSON-able)."""
    from llmlab.grading.runner import NotebookRunner

    nb = nbformat.read(twin, 4)
    exclude = sorted(set().union(*[bound_names(c.source) for c in nb.cells
                                   if _meta(c).get("solution")] or [set()]))
    out = workdir / "reference.json"
    cells = [nbformat.v4.new_code_cell(
        "import llmlab.grading.reference_run as _llmlab_ref\n"
        f"_llmlab_ref.start({str(out)!r}, {exclude!r})")]
    exercises: dict[str, list[dict[str, Any]]] = {}
    errors = []
    tests = {id(c) for c in test_cells(nb)}
    for index in reference_cells(nb):
        cell, meta = nb.cells[index], _meta(nb.cells[index])
        if id(cell) in tests:
            gid = meta["grade_id"]
            exercise = gid.split("__")[0]
            exercises.setdefault(exercise, []).append(
                {"gid": gid, "source": cell.source, "points": float(meta.get("points") or 0)})
            cells.append(nbformat.v4.new_code_cell(
                f"_llmlab_ref.enter({gid!r}, {exercise!r}, globals())"))
        cells.append(nbformat.v4.new_code_cell(cell.source))
    cells.append(nbformat.v4.new_code_cell("_llmlab_ref.RECORDER.finish()"))
    run = nbformat.v4.new_notebook(cells=cells, metadata=nb.metadata)
    client = NotebookRunner(run, timeout=timeout, kernel_name="python3", allow_errors=True,
                            resources={"metadata": {"path": str(twin.parent)}})
    with client.setup_kernel(env=env):
        for index, cell in enumerate(run.cells):
            client.execute_cell(cell, index)
            for o in cell.get("outputs", []):
                if o.get("output_type") == "error":
                    errors.append(f"{o.get('ename')}: {o.get('evalue')}")
    if not out.exists() or errors:
        # An authored notebook runs cleanly: a failing reference would leave test cells without
        # expected results, and nothing to compare an answer with.
        raise RuntimeError("the reference run failed: " + "; ".join(errors[-3:]))
    data = json.loads(out.read_text())
    data["exercises"] = exercises
    data["errors"] = errors
    data["format"] = FORMAT
    return data


RECORDER: ReferenceRecorder | None = None


def start(out: str, exclude: list[str]) -> None:
    """Called in the reference kernel's first cell."""
    global RECORDER
    RECORDER = ReferenceRecorder(out, exclude)
    checks._RECORDER = RECORDER
    os.environ[checks.GRADER_ENV] = "1"


def enter(grade_id: str, exercise: str, namespace: dict[str, Any]) -> None:
    assert RECORDER is not None
    RECORDER.enter(grade_id, exercise, namespace)
