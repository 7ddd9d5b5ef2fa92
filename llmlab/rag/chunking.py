"""Chunking: cut documents into the pieces a retriever indexes and a prompt quotes.

Three strategies, measured against each other in chapter 12:

- **fixed** windows of ``size`` characters that start every ``size - overlap`` characters, so a
  sentence cut by one boundary is whole in the neighbouring chunk (LangChain's
  ``CharacterTextSplitter``; the overlap trades index size for fewer cut answers);
- **by structure**: for Python source, one chunk per top-level statement group (a function, a
  class, the imports), merged up to ``max_chars``; a longer definition is cut at the statements
  inside it (a class at its methods), and fixed windows cut only what has none (LangChain's
  ``RecursiveCharacterTextSplitter.from_language`` and LlamaIndex's ``CodeSplitter`` cut at
  syntax boundaries for the same reason: a retrieved chunk that is a whole function is one the
  model can use).

Chunks carry their document and character span, so an answer can cite ``chunk.id``.
Taught in chapter 12 (solutions/12_rag_agents).
"""

from __future__ import annotations

import ast
from dataclasses import dataclass

from llmlab.data import Document


@dataclass(frozen=True)
class Chunk:
    """``text == document.text[start:end]``; ``id`` is ``"<doc>#<start>"`` (stable, citable)."""

    doc: str
    start: int
    end: int
    text: str

    @property
    def id(self) -> str:
        return f"{self.doc}#{self.start}"


def fixed_spans(length: int, size: int, overlap: int = 0) -> list[tuple[int, int]]:
    """Character spans ``[(start, end), ...]`` of windows of ``size`` with ``overlap``.

    Windows start at ``0, size - overlap, 2 (size - overlap), ...``; the last one ends at
    ``length`` and no window starts inside the previous window's overlap only (a window whose
    start is past ``length - overlap`` would hold nothing new, so there is none). An empty text
    has no spans.
    """
    if size < 1 or not 0 <= overlap < size:
        raise ValueError(f"need size >= 1 and 0 <= overlap < size, got size={size}, "
                         f"overlap={overlap}")
    if length < 0:
        raise ValueError(f"length must be >= 0, got {length}")
    step, spans, start = size - overlap, [], 0
    while start < length:
        spans.append((start, min(start + size, length)))
        if start + size >= length:
            break
        start += step
    return spans


def fixed_chunks(doc: Document, size: int = 800, overlap: int = 100) -> list[Chunk]:
    """``doc`` cut into fixed windows (see :func:`fixed_spans`)."""
    return [Chunk(doc.name, a, b, doc.text[a:b]) for a, b in fixed_spans(len(doc.text), size, overlap)]


def _line_offsets(text: str) -> list[int]:
    offsets, at = [0], 0
    for line in text.splitlines(keepends=True):
        at += len(line)
        offsets.append(at)
    return offsets


def _statement_start(node: ast.stmt, offsets: list[int]) -> int:
    """Where a statement's first line (its first decorator's) begins."""
    first = (getattr(node, "decorator_list", None) or [node])[0]
    return offsets[min(first.lineno, len(offsets)) - 1]


def _cut(a: int, b: int, nodes: list[ast.stmt], offsets: list[int], max_chars: int) -> list[tuple[int, int]]:
    """``[a, b)`` cut at the starts of ``nodes`` (the statements inside it); a piece longer than
    ``max_chars`` is cut at its own inner statements (a class at its methods), and one with none
    into fixed windows."""
    starts = {_statement_start(n, offsets): n for n in nodes}
    bounds = sorted({a, *(s for s in starts if a < s < b)})
    pieces: list[tuple[int, int]] = []
    for lo, hi in zip(bounds, bounds[1:] + [b]):
        inner = getattr(starts.get(lo), "body", None)
        if hi - lo <= max_chars:
            pieces.append((lo, hi))
        elif isinstance(inner, list) and any(lo < _statement_start(n, offsets) < hi for n in inner):
            pieces += _cut(lo, hi, inner, offsets, max_chars)
        else:
            pieces += [(lo + x, lo + y) for x, y in fixed_spans(hi - lo, max_chars)]
    return pieces


def structure_spans(text: str, max_chars: int = 1200) -> list[tuple[int, int]]:
    """Spans of Python source cut at statements, merged up to ``max_chars``.

    Each span starts at a top-level statement (at its first decorator) and ends where the next
    begins, so the spans tile the text (a comment above a definition ends the span before it).
    A statement longer than ``max_chars`` is cut at the statements inside it, recursively (a
    class at its methods, a function at its statements; the header goes with what follows it),
    and one with nothing inside to cut at, or text that does not parse, into fixed windows.
    Neighbouring small pieces are merged while they fit in ``max_chars``.
    """
    if max_chars < 1:
        raise ValueError(f"max_chars must be >= 1, got {max_chars}")
    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError):
        return fixed_spans(len(text), max_chars)
    spans: list[tuple[int, int]] = []
    for a, b in _cut(0, len(text), tree.body, _line_offsets(text), max_chars):
        if b <= a:
            continue
        if spans and b - spans[-1][0] <= max_chars and spans[-1][1] == a:
            spans[-1] = (spans[-1][0], b)
        else:
            spans.append((a, b))
    return spans


def structure_chunks(doc: Document, max_chars: int = 1200) -> list[Chunk]:
    """``doc`` (Python source) cut at its top-level statements (see :func:`structure_spans`)."""
    return [Chunk(doc.name, a, b, doc.text[a:b]) for a, b in structure_spans(doc.text, max_chars)]


__all__ = ["Chunk", "fixed_chunks", "fixed_spans", "structure_chunks", "structure_spans"]
