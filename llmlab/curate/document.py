"""One record of the data pipeline, and streaming JSON-lines files of them.

A :class:`Doc` is what every stage of :mod:`llmlab.curate` takes and returns: an id, a text (the
raw HTML of a crawled page before extraction, plain text after) and a metadata dict (the page's
URL, its ground-truth labels, what each stage found). It mirrors datatrove's ``Document(text,
id, metadata)`` so a stage moves between llmlab and datatrove without copying
(:mod:`llmlab.curate.datatrove_steps`).

Files are JSON lines, gzip-compressed when the name ends in ``.gz``; reading and writing stream
one record at a time, so a pipeline holds one document in memory, not the corpus.
Taught in chapter 10 (solutions/10_data).
"""

from __future__ import annotations

import gzip
import io
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any


@dataclass
class Doc:
    """A document: ``text`` is HTML before extraction and plain text after it."""

    id: str
    text: str
    meta: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps({"id": self.id, "text": self.text, "meta": self.meta}, ensure_ascii=False)

    @classmethod
    def from_json(cls, line: str) -> Doc:
        obj = json.loads(line)
        if not isinstance(obj, dict) or "id" not in obj or "text" not in obj:
            raise ValueError(f"a document line needs 'id' and 'text', got {line[:80]!r}")
        return cls(str(obj["id"]), obj["text"], obj.get("meta") or {})


def _open(path: Path, mode: str) -> IO[str]:
    if path.suffix == ".gz":
        return gzip.open(path, mode + "t", encoding="utf-8")  # type: ignore[return-value]
    return open(path, mode, encoding="utf-8")


def read_docs(path: str | Path) -> Iterator[Doc]:
    """Stream the documents of a ``.jsonl`` or ``.jsonl.gz`` file, one at a time."""
    with _open(Path(path), "r") as f:
        for line in f:
            if line.strip():
                yield Doc.from_json(line)


def write_docs(path: str | Path, docs: Iterable[Doc], *, gzip_level: int = 6) -> int:
    """Write documents as JSON lines (gzip for ``.gz``); returns how many were written."""
    path = Path(path)
    n = 0
    with open(path, "wb") as raw:
        # no name or time in the gzip header: the same documents give the same bytes
        stream = gzip.GzipFile(filename="", fileobj=raw, mode="wb", compresslevel=gzip_level,
                               mtime=0) if path.suffix == ".gz" else raw
        with io.TextIOWrapper(stream, encoding="utf-8", newline="\n") as f:
            for doc in docs:
                f.write(doc.to_json() + "\n")
                n += 1
    return n
