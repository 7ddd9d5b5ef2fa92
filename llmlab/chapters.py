"""The book's table of contents, read from the chapter notebooks themselves.

Every chapter states its budget in its second cell as a line like
``**Budget:** ~2 min on 2 CPU cores · peak RAM ~1.5 GB``; this module reads titles and budgets
so the README, chapter 00 and the book's landing page never repeat them by hand.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import nbformat

BUDGET = re.compile(
    r"\*\*Budget:?\*\*:?\s*~?\s*(?P<min>[\d.]+)\s*min.*?RAM\s*~?\s*(?P<ram>[\d.]+)\s*(?P<unit>[GM]B)",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class Chapter:
    number: int
    slug: str          # folder name, e.g. "02_gpt"
    title: str         # the notebook's first heading
    minutes: float     # budget: minutes on 2 CPU cores
    ram_gb: float      # budget: peak RAM in GB
    path: Path


def read_chapter(path: Path) -> Chapter:
    """Title and budget of one notebook; ValueError if it does not state them."""
    nb = nbformat.read(path, as_version=4)
    text = "\n".join(c.source for c in nb.cells[:4] if c.cell_type == "markdown")
    title = re.search(r"^#\s+(.+)$", text, re.MULTILINE)
    budget = BUDGET.search(text)
    if not title or not budget:
        raise ValueError(f"{path}: the first cells must hold a '# Title' and a '**Budget:**' line")
    ram = float(budget["ram"]) / (1024 if budget["unit"].upper() == "MB" else 1)
    slug = path.parent.name
    name = re.sub(r"^\d+\s*[·.:\-]\s*", "", title[1].strip())
    return Chapter(int(slug[:2]), slug, name, float(budget["min"]), ram, path)


def list_chapters(root: Path) -> list[Chapter]:
    """Every ``NN_topic/NN_topic.ipynb`` below ``root`` (solutions/ or chapters/), in order."""
    found = (p / f"{p.name}.ipynb" for p in sorted(Path(root).glob("[0-9][0-9]_*")))
    return [read_chapter(p) for p in found if p.exists()]
