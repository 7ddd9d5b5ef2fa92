"""The package's architecture, read from its source: layers import only downward, no module
imports itself back through others, nothing registers itself at import time, and no library
module imports the courseware.

The layer order follows the stack the chapters build (docs/design.md): a layer may import any
layer before it in ``LAYERS``. It is the order of dependencies, so two chapters' packages can sit
lower than their chapter numbers: quantization (07) is below the KV cache (08), whose quantized
caches use its formats, and both are below PEFT (05: QLoRA, prefix tuning through the cache) and
alignment (06: rollouts decode through the cache).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import llmlab

PACKAGE = Path(llmlab.__file__).parent
LAYERS = ["utils", "data", "tokenizer", "nn", "model", "train", "attention", "parallel", "quant",
          "kvcache", "peft", "align", "serve", "kernels"]
COURSEWARE = {"grading": {"cli"}, "chapters": {"grading", "cli"}}  # who may import them
ENTRY_POINTS = {"cli"}  # the command line sits on top of everything


def _modules() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the package."""
    out = {}
    for f in PACKAGE.rglob("*.py"):
        parts = list(f.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = f
    return out


MODULES = _modules()


def _imports(path: Path) -> list[tuple[str, int]]:
    """(imported llmlab module, line) for every import in ``path``, at any depth, but those
    under ``if TYPE_CHECKING:`` (annotations only: they never run)."""
    tree = ast.parse(path.read_text())
    typing_only = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
                   and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"
                   for stmt in node.body for n in ast.walk(stmt)}
    found = []
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            found += [(a.name, node.lineno) for a in node.names if a.name.startswith("llmlab")]
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("llmlab"):
            for a in node.names:  # `from llmlab.x import y`: y may be a module of its own
                sub = f"{node.module}.{a.name}"
                found.append((sub if sub in MODULES else node.module, node.lineno))
    return found


def _layer(module: str) -> str:
    return module.split(".")[1] if "." in module else "llmlab"


def _rank(layer: str) -> int:
    if layer in LAYERS:
        return LAYERS.index(layer)
    if layer in ENTRY_POINTS or layer in COURSEWARE:
        return len(LAYERS)
    raise AssertionError(f"llmlab.{layer} has no place in LAYERS: add it where it belongs")


def test_every_subpackage_has_a_layer():
    for module in MODULES:
        if module != "llmlab":
            _rank(_layer(module))


def test_imports_point_down_the_layers():
    upward = []
    for module, path in MODULES.items():
        src = _layer(module)
        for target, line in _imports(path):
            dst = _layer(target)
            if dst in (src, "llmlab"):
                continue
            if dst in COURSEWARE:
                if src not in COURSEWARE[dst]:
                    upward.append(f"{module}:{line} imports the courseware {target}")
            elif src not in COURSEWARE and _rank(dst) >= _rank(src):
                upward.append(f"{module}:{line} imports {target} (layer {dst!r} is not below "
                              f"{src!r})")
    assert not upward, "\n".join(upward)


def test_no_import_cycles():
    graph = {m: {t for t, _ in _imports(p) if t in MODULES and t != m} for m, p in MODULES.items()}
    cycles, state = [], {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                cycles.append(" -> ".join(stack[stack.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt, [*stack, nxt])
        state[node] = "done"

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    # A package's __init__ re-exports its modules; a module importing its own package's
    # __init__ would close a loop through it, and that counts too.
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def _imported_names(tree: ast.Module) -> set[str]:
    names = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            names |= {(a.asname or a.name).split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            names |= {a.asname or a.name for a in node.names}
    return names


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_registration_at_import_time(module):
    """Importing a module changes nothing outside it: no module-level call statement (a
    ``register(...)``) and no write into another module's object."""
    tree = ast.parse(MODULES[module].read_text())
    imported = _imported_names(tree)
    problems = []
    for node in tree.body:
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Call):
            problems.append(f"line {node.lineno}: a call at import time: {ast.unparse(node)}")
        targets = (node.targets if isinstance(node, ast.Assign)
                   else [node.target] if isinstance(node, (ast.AugAssign, ast.AnnAssign)) else [])
        for t in targets:
            base = t
            while isinstance(base, (ast.Attribute, ast.Subscript)):
                base = base.value
            if t is not base and isinstance(base, ast.Name) and base.id in imported:
                problems.append(f"line {node.lineno}: writes into {base.id}, which it imports: "
                                f"{ast.unparse(node)}")
    assert not problems, f"{module}:\n" + "\n".join(problems)
