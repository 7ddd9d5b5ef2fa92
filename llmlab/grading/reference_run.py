"""The reference run: the chapter's authored notebook, executed once, records what to expect.

No learner code runs here. The authored notebook (``solutions/NN_topic``) is executed in a fresh
kernel with the checks in recording mode; every check call in a test cell records:

- its cases (pickled, for the judge to call the learner's code on exactly these inputs),
- the expected results in the safe format of :mod:`llmlab.grading.record` (never pickled, so the
  grader reads them without running anything),
- what it blocks (the reference and the twins in ``block=[...]``), its tolerances, its hint.

Before the first test cell of each exercise it snapshots the notebook's namespace (modules by
name, functions by code, data pickled), minus every name an answer cell defines, so the judge can
run the exercise's test cells without re-running the chapter. Each test cell starts from a seed
derived from its id, here and in the judge, so cases built inside a test cell are the same.
"""

from __future__ import annotations

import ast
import base64
import hashlib
import json
import marshal
import os
import pickle
import sys
import types
import zlib
from pathlib import Path
from typing import Any

import nbformat

from llmlab.grading import checks
from llmlab.grading.checks import Case, param_grads
from llmlab.grading.guard import keys_for
from llmlab.grading.record import encode

FORMAT = 3
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
    def check_function(self, fn, ref, cases, *, atol, rtol, hint, name, block):
        cases = [Case.of(c) for c in cases]
        payload = pickle.dumps([(c.args, c.kwargs) for c in cases], protocol=5)
        expected = []
        for case in cases:
            args, kwargs = case.copy()
            expected.append(_safe_call(ref, args, kwargs))
        self._add({"kind": "function", "name": name, "hint": hint, "atol": atol, "rtol": rtol,
                   "notes": [c.describe(i, len(cases)) for i, c in enumerate(cases)],
                   "payload": b64(payload), "expected": expected}, [ref, *block])

    def check_module(self, cls, ref_cls, init, inputs, *, atol, rtol, hint, name, grads, seed,
                     block):
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
        self._add({"kind": "module", "name": name, "hint": hint, "atol": atol, "rtol": rtol,
                   "notes": [c.describe(i, len(cases)) for i, c in enumerate(cases)],
                   "payload": b64(payload), "expected": expected, "grads": expected_grads,
                   "shapes": shapes}, [ref_cls, *block])

    def check_value(self, got, expected, *, what, atol, rtol, hint):
        self._add({"kind": "value", "name": what, "hint": hint, "atol": atol, "rtol": rtol,
                   "expected": [{"value": encode(expected)}]}, [])

    def expect(self, condition, message, *, what):
        self._add({"kind": "expect", "name": what, "message": message,
                   "expected": [{"value": bool(condition)}]}, [])


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


# ------------------------------------------------------------------- the driver (grader side)

def _meta(cell: nbformat.NotebookNode) -> dict[str, Any]:
    return cell.get("metadata", {}).get("nbgrader", {})


def test_cells(nb: nbformat.NotebookNode) -> list[nbformat.NotebookNode]:
    return [c for c in nb.cells if c.cell_type == "code" and _meta(c).get("grade")
            and not _meta(c).get("solution") and _meta(c).get("grade_id")]


def cache_key(twin: Path) -> str:
    h = hashlib.sha256(twin.read_bytes())
    for part in (str(FORMAT), sys.version, _torch_version()):
        h.update(part.encode())
    h.update(Path(__file__).read_bytes())
    return h.hexdigest()


def _torch_version() -> str:
    try:
        import torch

        return torch.__version__
    except ImportError:
        return ""


def run_reference(twin: Path, env: dict[str, str], timeout: int, workdir: Path) -> dict[str, Any]:
    """Execute the authored notebook ``twin`` in recording mode; the recorded data (JSON-able)."""
    from nbclient import NotebookClient

    nb = nbformat.read(twin, 4)
    exclude = sorted(set().union(*[bound_names(c.source) for c in nb.cells
                                   if _meta(c).get("solution")] or [set()]))
    out = workdir / "reference.json"
    cells = [nbformat.v4.new_code_cell(
        "import llmlab.grading.reference_run as _llmlab_ref\n"
        f"_llmlab_ref.start({str(out)!r}, {exclude!r})")]
    exercises: dict[str, list[dict[str, Any]]] = {}
    errors = []
    for cell in nb.cells:
        meta = _meta(cell)
        if cell in test_cells(nb):
            gid = meta["grade_id"]
            exercise = gid.split("__")[0]
            exercises.setdefault(exercise, []).append(
                {"gid": gid, "source": cell.source, "points": float(meta.get("points") or 0)})
            cells.append(nbformat.v4.new_code_cell(
                f"_llmlab_ref.enter({gid!r}, {exercise!r}, globals())"))
        if cell.cell_type == "code":
            cells.append(nbformat.v4.new_code_cell(cell.source))
    cells.append(nbformat.v4.new_code_cell("_llmlab_ref.RECORDER.finish()"))
    run = nbformat.v4.new_notebook(cells=cells, metadata=nb.metadata)
    client = NotebookClient(run, timeout=timeout, kernel_name="python3", allow_errors=True,
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
