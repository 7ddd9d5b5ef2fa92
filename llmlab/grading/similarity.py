"""Flag answers whose code is llmlab's reference, up to names, comments and docstrings.

llmlab is open source: a learner can read (or paste) any reference, and a grader cannot stop
that. It can make copying visible. ``similar(answer, references)`` compares every function and
method of an answer with the references' after normalising them (docstrings dropped, parameters
and local variables renamed in order of first use, the function's own name ignored), and
returns the references it matches.
"""

from __future__ import annotations

import ast
import builtins
import inspect
import textwrap
from typing import Any

_BUILTINS = set(dir(builtins))


class _Rename(ast.NodeTransformer):
    def __init__(self, local: set[str]) -> None:
        self.local, self.names = local, {}

    def _name(self, name: str) -> str:
        if name not in self.local:
            return name
        return self.names.setdefault(name, f"v{len(self.names)}")

    def visit_Name(self, node: ast.Name) -> ast.AST:
        node.id = self._name(node.id)
        return node

    def visit_arg(self, node: ast.arg) -> ast.AST:
        node.arg = self._name(node.arg)
        node.annotation = None
        return node


def _strip_docstring(body: list[ast.stmt]) -> list[ast.stmt]:
    if body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None),
                                                                ast.Constant) \
            and isinstance(body[0].value.value, str):
        return body[1:] or [ast.Pass()]
    return body


def normalise_function(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> str:
    """A canonical dump of ``fn``'s parameters and body."""
    fn = ast.parse(ast.unparse(fn)).body[0]  # a copy
    assert isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef))
    local = {a.arg for a in ast.walk(fn.args) if isinstance(a, ast.arg)}
    for node in ast.walk(fn):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            local.add(node.id)
    fn.body = _strip_docstring(fn.body)
    fn.returns, fn.decorator_list = None, []
    renamer = _Rename(local - _BUILTINS)
    args = renamer.visit(fn.args)
    body = [renamer.visit(stmt) for stmt in fn.body]
    return ast.dump(ast.Module(body=[ast.Expr(ast.Constant("args")), *body], type_ignores=[]),
                    annotate_fields=False) + ast.dump(args, annotate_fields=False)


def functions(source: str) -> list[tuple[str, str]]:
    """(qualified name, normalised form) of every function and method in ``source``."""
    try:
        tree = ast.parse(textwrap.dedent(source))
    except SyntaxError:
        return []
    out = []
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            out.append((node.name, normalise_function(node)))
        elif isinstance(node, ast.ClassDef):
            for item in node.body:
                if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    out.append((f"{node.name}.{item.name}", normalise_function(item)))
    return [(n, f) for n, f in out if "Pass()" not in f and "NotImplementedError" not in f]


def source_of(obj: Any) -> str | None:
    try:
        return textwrap.dedent(inspect.getsource(obj))
    except (OSError, TypeError):
        return None


def similar(answer: str, references: dict[str, str]) -> list[str]:
    """Names of the references (``label -> source``) that some function of ``answer`` copies."""
    mine = {form for _, form in functions(answer)}
    hits = []
    for label, source in references.items():
        if any(form in mine for _, form in functions(source)):
            hits.append(label)
    return hits
