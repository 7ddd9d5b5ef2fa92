"""Exact deduplication: whole documents by a hash of their normalised text, and lines across
documents (CCNet's paragraph dedup).

Copies are the most common thing in a crawl: the same page under several URLs, and the same
navigation and copyright lines on every page of a site. Lee et al. ("Deduplicating Training
Data Makes Language Models Better", arXiv:2107.06499) show models trained on deduplicated data
memorise less and waste fewer tokens. Two exact forms:

- **document level**: a document is dropped when the hash of its normalised text (lowercase,
  digits as 0, punctuation and runs of whitespace dropped) has been seen before;
- **line level** (Wenzek et al., "CCNet", arXiv:1911.00359): a line is dropped when the same
  normalised line appeared in an earlier document — boilerplate that extraction left in is
  repeated across a site and goes here. The first occurrence stays.

Both keep one 8-byte hash per distinct item (a set in memory: ~100 bytes per item in Python;
datatrove shards the hashes to disk to go past one machine's memory). ``dedup_file`` is the
file-in/file-out form. Taught in chapter 10 (solutions/10_data).
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Iterable, Iterator
from pathlib import Path

from llmlab.curate.document import Doc, read_docs, write_docs

_DIGIT = re.compile(r"\d")
_PUNCT = re.compile(r"[^\w\s]")


def normalize(text: str) -> str:
    """What counts as "the same" text: NFKC, lowercase, digits as 0, no punctuation, single spaces."""
    text = unicodedata.normalize("NFKC", text).lower()
    return " ".join(_PUNCT.sub(" ", _DIGIT.sub("0", text)).split())


def text_hash(text: str) -> bytes:
    """8 bytes of SHA-1 of the normalised text."""
    return hashlib.sha1(normalize(text).encode("utf-8")).digest()[:8]


class DocDedup:
    """Streaming document dedup: ``seen(text)`` is False the first time a text is met."""

    def __init__(self) -> None:
        self.hashes: set[bytes] = set()

    def seen(self, text: str) -> bool:
        h = text_hash(text)
        if h in self.hashes:
            return True
        self.hashes.add(h)
        return False


class LineDedup:
    """Streaming line dedup across documents: ``__call__(text)`` returns the text without the
    lines (of at least ``min_chars`` normalised characters) that earlier documents had."""

    def __init__(self, min_chars: int = 1) -> None:
        self.hashes: set[bytes] = set()
        self.min_chars = min_chars

    def __call__(self, text: str) -> str:
        kept, new = [], set()
        for line in text.split("\n"):
            norm = normalize(line)
            if len(norm) < self.min_chars:
                kept.append(line)
                continue
            h = hashlib.sha1(norm.encode("utf-8")).digest()[:8]
            if h not in self.hashes:
                kept.append(line)
                new.add(h)
        self.hashes |= new  # a line repeated inside one document stays (that is Gopher's job)
        return "\n".join(kept)


def dedup_docs(texts: Iterable[str]) -> list[bool]:
    """For each text, whether it is kept (the first of its exact copies)."""
    dedup = DocDedup()
    return [not dedup.seen(t) for t in texts]


def dedup_lines(texts: Iterable[str], min_chars: int = 1) -> list[str]:
    """Each text without the lines that an earlier text had (first occurrences stay)."""
    dedup = LineDedup(min_chars)
    return [dedup(t) for t in texts]


def dedup_stream(docs: Iterable[Doc], level: str = "doc") -> Iterator[Doc]:
    """Documents without exact copies (``level="doc"``) or without repeated lines
    (``level="line"``; a document left empty is dropped), one at a time."""
    if level not in ("doc", "line"):
        raise ValueError(f"level must be 'doc' or 'line', got {level!r}")
    if level == "doc":
        dedup = DocDedup()
        yield from (d for d in docs if not dedup.seen(d.text))
        return
    lines = LineDedup()
    for d in docs:
        text = lines(d.text)
        if text.strip():
            yield Doc(d.id, text, d.meta)


def dedup_file(src: str | Path, dst: str | Path, level: str = "doc") -> dict[str, int]:
    """File in, file out: read JSON-lines documents from ``src`` and write the deduplicated
    stream to ``dst`` (``.gz`` for gzip). Returns ``{"read": n, "written": m}``."""
    counts = {"read": 0, "written": 0}

    def counted() -> Iterator[Doc]:
        for d in read_docs(src):
            counts["read"] += 1
            yield d

    counts["written"] = write_docs(dst, dedup_stream(counted(), level))
    return counts
