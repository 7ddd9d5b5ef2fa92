"""(docstring, code) pairs from the book's corpus: the queries and documents of chapter 12.

A function with a docstring is a natural retrieval pair: the docstring says in English what the
code does, so "find the code that does X" is a real search task whose answer is known. This is
how CodeSearchNet built its benchmark (Husain et al., "CodeSearchNet Challenge: Evaluating the
State of Semantic Code Search", arXiv:1909.09436): the docstring is the query, the function with
its docstring removed is the document.

``code_pairs`` parses each file with :mod:`ast` (files that do not parse on this interpreter are
skipped), keeps functions and methods whose first docstring line is long enough to be a query,
and removes the docstring from the code so the answer is not in the document verbatim. The split
into train and held-out pairs is by *file* (``llmlab.data.split_of``), so no held-out query has
a sibling method in training. Taught in chapter 12 (solutions/12_rag_agents).
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from dataclasses import dataclass

from llmlab.data import Document, split_of


@dataclass(frozen=True)
class CodePair:
    """One function: ``query`` (its docstring's first paragraph), ``code`` (its source with the
    docstring removed), where it lives (``doc``, ``name``, 1-based ``line``), its split, and its
    character span in the document: ``start:end`` the whole function (decorators included),
    ``body`` where the statements after the docstring begin."""

    query: str
    code: str
    doc: str
    name: str
    line: int
    split: str
    start: int
    end: int
    body: int

    @property
    def id(self) -> str:
        return f"{self.doc}::{self.name}"


def _first_paragraph(docstring: str) -> str:
    return " ".join(docstring.strip().split("\n\n")[0].split())


def _without_docstring(source_lines: list[str], node: ast.AST) -> str:
    """The function's source with its docstring statement cut out (decorators kept)."""
    first = node.decorator_list[0].lineno if node.decorator_list else node.lineno  # type: ignore[attr-defined]
    doc = node.body[0]  # type: ignore[attr-defined]
    lines = source_lines[first - 1:node.end_lineno]  # type: ignore[attr-defined]
    cut_a, cut_b = doc.lineno - first, doc.end_lineno - first + 1
    kept = lines[:cut_a] + lines[cut_b:]
    if len(node.body) == 1:  # type: ignore[attr-defined]
        indent = lines[cut_a][: len(lines[cut_a]) - len(lines[cut_a].lstrip())]
        kept.insert(cut_a, indent + "pass")
    return "\n".join(kept)


def code_pairs(docs: Iterable[Document], min_query_words: int = 4, max_code_lines: int = 60,
               val_fraction: float = 0.2) -> list[CodePair]:
    """Every documented function of ``docs`` as a :class:`CodePair`, in corpus order.

    Keeps functions whose docstring's first paragraph has at least ``min_query_words`` words and
    whose code (without docstring) has at most ``max_code_lines`` lines and a body beyond the
    docstring. ``split`` is ``"val"`` for a held-out file (``split_of(doc, val_fraction)``).
    """
    if min_query_words < 1 or max_code_lines < 2:
        raise ValueError(f"need min_query_words >= 1 and max_code_lines >= 2, got "
                         f"{min_query_words}, {max_code_lines}")
    out: list[CodePair] = []
    for d in docs:
        try:
            tree = ast.parse(d.text)
        except (SyntaxError, ValueError):
            continue
        lines = d.text.split("\n")  # as ast counts lines (str.splitlines also splits at \f)
        offsets = [0]
        for line in lines:
            offsets.append(offsets[-1] + len(line) + 1)
        split = split_of(d.name, val_fraction)
        for node in ast.walk(tree):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            docstring = ast.get_docstring(node)
            if not docstring or len(node.body) < 2:
                continue
            query = _first_paragraph(docstring)
            if len(query.split()) < min_query_words:
                continue
            code = _without_docstring(lines, node)
            if code.count("\n") + 1 > max_code_lines:
                continue
            first = node.decorator_list[0].lineno if node.decorator_list else node.lineno
            span = (offsets[first - 1], min(offsets[node.end_lineno], len(d.text)),
                    offsets[node.body[1].lineno - 1])
            out.append(CodePair(query, code, d.name, node.name, node.lineno, split, *span))
    out.sort(key=lambda p: (p.doc, p.line))
    return out


__all__ = ["CodePair", "code_pairs"]
