"""The book's generated pages: the chapter map, the glossary and the benchmark tables.

Each is MyST markdown built from a data source the repository already keeps, so nothing is
written twice: the chapter map from the notebooks (title, first paragraph, budget line), the
glossary from ``book/glossary.yml`` (which the chapters also use), the benchmarks from
``bench/results/*.md``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from .chapters import Chapter

GLOSSARY_KEYS = ("term", "zh", "chapter")


@dataclass(frozen=True)
class GlossaryEntry:
    """One technical term: English, 中文, and the two-digit chapter that teaches it."""

    term: str
    zh: str
    chapter: str


def load_glossary(path: Path) -> list[GlossaryEntry]:
    """Read ``glossary.yml``: a YAML list of ``{term, zh, chapter}``.

    Raises ``ValueError`` naming the entry on a missing or unknown key, an empty value, a
    chapter that is not a number 0-99, or a term listed twice.
    """
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or []
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a YAML list of {{term, zh, chapter}}, got {type(data).__name__}")
    entries: list[GlossaryEntry] = []
    seen: set[str] = set()
    for i, item in enumerate(data):
        where = f"{path}: entry {i + 1}"
        if not isinstance(item, dict):
            raise ValueError(f"{where}: expected a mapping with keys {GLOSSARY_KEYS}, got {item!r}")
        unknown = sorted(set(item) - set(GLOSSARY_KEYS))
        missing = [k for k in GLOSSARY_KEYS if item.get(k) in (None, "")]
        if unknown:
            raise ValueError(f"{where}: unknown key(s) {unknown}; allowed keys are {GLOSSARY_KEYS}")
        if missing:
            raise ValueError(f"{where} ({item.get('term', '?')}): missing {missing}")
        chapter = str(item["chapter"])
        if not re.fullmatch(r"\d{1,2}", chapter):
            raise ValueError(f"{where} ({item['term']}): chapter must be a number 0-99, got {chapter!r}")
        term = str(item["term"]).strip()
        if term.lower() in seen:
            raise ValueError(f"{where}: the term {term!r} is listed twice")
        seen.add(term.lower())
        entries.append(GlossaryEntry(term=term, zh=str(item["zh"]).strip(), chapter=f"{int(chapter):02d}"))
    return entries


def glossary_page(entries: list[GlossaryEntry], chapters: list[Chapter]) -> str:
    """The glossary as a Sphinx glossary, so chapters can link a term with ``{term}`Tokenizer```
    (Jupyter Book's glossary directive; the page says who teaches each term)."""
    by_number = {c.number: c for c in chapters}
    lines = [
        "# Glossary · 术语表",
        "",
        "Every technical term the book introduces, with its usual Chinese rendering and the",
        "chapter that teaches it.",
        "",
        "```{glossary}",
        ":sorted:",
        "",
    ]
    for entry in entries:
        chapter = by_number.get(entry.chapter)
        taught = (
            f"[{chapter.label}](<{chapter.docname}.ipynb>)"
            if chapter
            else f"chapter {entry.chapter} (coming)"
        )
        lines += [entry.term, f"  {entry.zh} · taught in {taught}", ""]
    lines += ["```", ""]
    return "\n".join(lines)


def chapter_map(chapters: list[Chapter]) -> str:
    """A table of the chapters that exist: number, title (linked), what it covers, budget."""
    if not chapters:
        return "*No chapter has been written yet.*\n"
    lines = ["| # | Chapter | What it covers | Budget |", "|---|---|---|---|"]
    for c in chapters:
        cells = [c.number, f"[{c.title}](<{c.docname}.ipynb>)", c.summary or "", c.budget or "—"]
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return "\n".join(lines) + "\n"


def benchmarks_page(intro: str, results: Path) -> str:
    """``intro`` followed by every ``results/*.md`` table, one section per benchmark.

    A table's own top heading becomes its section (level 2), its other headings nest below;
    a table without a heading gets one named after its file.
    """
    tables = sorted(results.glob("*.md")) if results.is_dir() else []
    parts = [intro.rstrip(), ""]
    if not tables:
        parts.append("*No benchmark has been run yet: `make bench` writes its tables here.*")
    for table in tables:
        text = table.read_text(encoding="utf-8").strip()
        if not _heading_levels(text):
            text = f"# {table.stem.replace('_', ' ')}\n\n{text}"
        parts += [_rebase_headings(text, top=2), ""]
    return "\n".join(parts) + "\n"


HEADING = re.compile(r"^(#{1,6}) ")


def _prose_lines(markdown: str):
    """Yield (line, is_prose) for each line, where prose means outside a code fence."""
    fenced = False
    for line in markdown.splitlines():
        if line.lstrip().startswith(("```", "~~~")):
            fenced = not fenced
            yield line, False
        else:
            yield line, not fenced


def _heading_levels(markdown: str) -> list[int]:
    return [len(m[1]) for line, prose in _prose_lines(markdown) if prose and (m := HEADING.match(line))]


def _rebase_headings(markdown: str, top: int) -> str:
    """Shift every heading (outside code fences) so the highest one is at level ``top``."""
    shift = top - min(_heading_levels(markdown), default=top)
    out = []
    for line, prose in _prose_lines(markdown):
        match = HEADING.match(line) if prose else None
        if match:
            line = "#" * min(6, len(match[1]) + shift) + line[len(match[1]) :]
        out.append(line)
    return "\n".join(out)
