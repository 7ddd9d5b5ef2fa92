"""Chunking: cut documents into the pieces a retriever indexes and a prompt quotes.

Three strategies, measured against each other in chapter 12:

- **fixed** windows of ``size`` characters that start every ``size - overlap`` characters, so a
  sentence cut by one boundary is whole in the neighbouring chunk (LangChain's
  ``CharacterTextSplitter``; the overlap trades index size for fewer cut answers);
- **by structure**: for Python source, one chunk per top-level statement group (a function, a
  class, the imports), merged up to ``max_chars`` and split with fixed windows only when one
  definition is longer (LangChain's ``RecursiveCharacterTextSplitter.from_language`` and
  LlamaIndex's ``CodeSplitter`` cut at syntax boundaries for the same reason: a retrieved chunk
  that is a whole function is one the model can use).

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


def structure_spans(text: str, max_chars: int = 1200) -> list[tuple[int, int]]:
    """Spans of Python source cut at top-level statements, merged up to ``max_chars``.

    Each span starts at a top-level statement (at its first decorator) and ends where the next
    begins, so the spans tile the text (a comment above a definition ends the span before it).
    Text that does not parse, and a statement longer than ``max_chars``, are cut into fixed
    windows.
    """
    if max_chars < 1:
        raise ValueError(f"max_chars must be >= 1, got {max_chars}")
    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError):
        return fixed_spans(len(text), max_chars)
    offsets = _line_offsets(text)
    starts = sorted({offsets[min((getattr(n, "decorator_list", None) or [n])[0].lineno, len(offsets)) - 1]
                     for n in tree.body} | {0})
    pieces = [(a, b) for a, b in zip(starts, starts[1:] + [len(text)]) if b > a]
    spans: list[tuple[int, int]] = []
    for a, b in pieces:
        if b - a > max_chars:
            spans += [(a + x, a + y) for x, y in fixed_spans(b - a, max_chars)]
        elif spans and b - spans[-1][0] <= max_chars and spans[-1][1] == a:
            spans[-1] = (spans[-1][0], b)
        else:
            spans.append((a, b))
    return spans


def structure_chunks(doc: Document, max_chars: int = 1200) -> list[Chunk]:
    """``doc`` (Python source) cut at its top-level statements (see :func:`structure_spans`)."""
    return [Chunk(doc.name, a, b, doc.text[a:b]) for a, b in structure_spans(doc.text, max_chars)]


__all__ = ["Chunk", "fixed_chunks", "fixed_spans", "structure_chunks", "structure_spans"]
