"""The book's crawl: 2,560 web pages with ground-truth labels, shipped with llmlab.

Built once by :mod:`llmlab.curate.crawl_build` from text every Python machine has (standard
library documentation, installed packages' READMEs and licences, their translation catalogues,
the book's Chinese sample) and frozen in ``assets/crawl.jsonl.gz`` with its manifest
``assets/crawl.json`` (counts, sha256, and the command that rebuilds it), so every machine and
Python version reads the same pages. Taught in chapter 10 (solutions/10_data).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from llmlab.curate.document import Doc, read_docs

ASSETS = Path(__file__).with_name("assets")
CRAWL = ASSETS / "crawl.jsonl.gz"


def crawl_manifest() -> dict:
    """What the shipped crawl holds: page and label counts, sha256, how it was built."""
    return json.loads((ASSETS / "crawl.json").read_text(encoding="utf-8"))


def load_crawl(path: str | Path = CRAWL, verify: bool = True) -> list[Doc]:
    """The crawl's pages (``text``: HTML; ``meta``: URL and labels), checked against the
    manifest's sha256 when ``verify`` (a changed file is an error, not a silently new book)."""
    path = Path(path)
    if verify and path == CRAWL:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        want = crawl_manifest()["sha256"]
        if digest != want:
            raise ValueError(f"{path.name} has sha256 {digest[:12]}…, the manifest says "
                             f"{want[:12]}…: rebuild it with the manifest's command")
    return list(read_docs(path))
