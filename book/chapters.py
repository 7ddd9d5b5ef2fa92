"""Find the chapters in solutions/ and turn each notebook into the copy the book renders.

The book shows the authored notebooks with their saved outputs, with two changes made to a copy
(solutions/ itself is never written):

- nbgrader solution cells are collapsed behind a "Show solution" toggle (code cells get the
  ``hide-input`` tag; markdown answers are wrapped in a dropdown), and the
  ``### BEGIN SOLUTION`` / ``### END SOLUTION`` marker lines are dropped;
- hidden-test cells (``### BEGIN HIDDEN TESTS`` in the source, or a ``grade_id`` ending in
  ``__hidden``) are removed entirely.

The chapter's heading gets its number ("01 · Tokenization"), the same title the table of
contents shows. Nothing is executed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import nbformat

from llmlab.chapters import Chapter as NotebookChapter
from llmlab.chapters import list_chapters

# "Chapter 1 — ", "01 · ", "1. ", "Chapter 01: " in front of a title the author wrote.
NUMBER_PREFIX = re.compile(r"^(?:chapter\s*)?\d+\s*(?:[-—–:·.|]\s*)?", re.IGNORECASE)
SOLUTION_MARKER = re.compile(r"^\s*### (BEGIN|END) SOLUTION\s*$")
HIDDEN_MARKER = "### BEGIN HIDDEN TESTS"
SOLUTION_PROMPTS = {"code_prompt_show": "Show solution", "code_prompt_hide": "Hide solution"}


@dataclass(frozen=True)
class Chapter:
    """A chapter as the book lists it; title and budget come from ``llmlab.chapters``."""

    number: str  # two digits, "00".."99"
    slug: str  # the folder name, e.g. "01_tokenization"
    notebook: Path  # the authored notebook in solutions/
    title: str  # the notebook's first heading without the number in front
    summary: str  # the first paragraph under that heading, for the chapter map
    budget: str  # "~2 min · 1.5 GB RAM", from the notebook's budget line

    @property
    def label(self) -> str:
        """The numbered title of the table of contents and the page: "01 · Tokenization"."""
        return f"{self.number} · {self.title}"

    @property
    def docname(self) -> str:
        """The page's path in the book, without suffix: "01_tokenization/01_tokenization"."""
        return f"{self.slug}/{self.slug}"


def find_chapters(solutions: Path) -> list[Chapter]:
    """Every ``NN_topic/NN_topic.ipynb`` under ``solutions``, in chapter-number order.

    Raises ``ValueError`` when a notebook lacks its title or budget line, or when two folders
    share a number.
    """
    chapters = [_book_chapter(c) for c in list_chapters(solutions)] if solutions.is_dir() else []
    numbers = [c.number for c in chapters]
    duplicates = sorted({n for n in numbers if numbers.count(n) > 1})
    if duplicates:
        raise ValueError(f"two chapters share the number(s) {duplicates} in {solutions}")
    return sorted(chapters, key=lambda c: int(c.number))


def _book_chapter(chapter: NotebookChapter) -> Chapter:
    nb = nbformat.read(chapter.path, as_version=4)
    markdown = "\n\n".join(cell.source for cell in nb.cells if cell.cell_type == "markdown")
    after_title = markdown.split(chapter.title, 1)[-1]
    return Chapter(
        number=f"{chapter.number:02d}",
        slug=chapter.slug,
        notebook=chapter.path,
        title=NUMBER_PREFIX.sub("", chapter.title).strip(),
        summary=_summary(after_title),
        budget=f"~{chapter.minutes:g} min · {chapter.ram_gb:g} GB RAM",
    )


def _summary(text: str, limit: int = 160) -> str:
    """One sentence for the chapter map, from the first paragraph of prose (not a heading, list,
    quote, table, math or HTML): the sentence that starts "This chapter", else the first one,
    cut at its first clause (" — ", ";", ":") when longer than ``limit``."""
    for block in re.split(r"\n\s*\n", text):
        block = " ".join(line.strip() for line in block.strip().splitlines())
        if not block or re.match(r"^([#>|<`*-]|\$\$|\d+\.)", block):
            continue
        sentences = re.split(r"(?<=[.!?])\s+(?=[A-Z*_`])", block)
        summary = next((s for s in sentences if s.startswith("This chapter")), sentences[0])
        if len(summary) > limit:
            summary = re.split(r" — |; |: ", summary, maxsplit=1)[0].rstrip(",.") + "."
        if len(summary) > limit:
            summary = summary[:limit].rsplit(" ", 1)[0]
            if summary.count("`") % 2:  # never leave inline code open
                summary = summary[: summary.rindex("`")]
            summary = summary.rstrip(" ,;:") + "…"
        return summary
    return ""


def is_hidden_test(cell: nbformat.NotebookNode) -> bool:
    """True for nbgrader hidden-test cells, which the book never shows."""
    grade_id = cell.get("metadata", {}).get("nbgrader", {}).get("grade_id", "")
    return HIDDEN_MARKER in cell.source or grade_id.endswith("__hidden")


def is_solution(cell: nbformat.NotebookNode) -> bool:
    """True for nbgrader solution cells (``metadata.nbgrader.solution == true``)."""
    return bool(cell.get("metadata", {}).get("nbgrader", {}).get("solution", False))


def book_notebook(chapter: Chapter) -> nbformat.NotebookNode:
    """The notebook as the book shows it: solutions collapsed, hidden tests gone, numbered title."""
    nb = nbformat.read(chapter.notebook, as_version=4)
    nb.cells = [_for_book(cell) for cell in nb.cells if not is_hidden_test(cell)]
    _number_title(nb, chapter)
    return nb


def _for_book(cell: nbformat.NotebookNode) -> nbformat.NotebookNode:
    if not is_solution(cell):
        return cell
    source = "\n".join(line for line in cell.source.splitlines() if not SOLUTION_MARKER.match(line))
    if cell.cell_type == "code":
        tags = cell.metadata.setdefault("tags", [])
        if "hide-input" not in tags:
            tags.append("hide-input")
        cell.metadata.setdefault("mystnb", {}).update(SOLUTION_PROMPTS)
        cell.source = source
    elif cell.cell_type == "markdown":
        # A fence longer than any the answer uses, so the answer's own fences stay inside.
        fence = ":" * max(4, 1 + max((len(m) for m in re.findall(r"^:{3,}", source, re.M)), default=0))
        cell.source = f"{fence}{{dropdown}} Show solution\n:class-container: solution\n\n{source}\n{fence}"
    return cell


def _number_title(nb: nbformat.NotebookNode, chapter: Chapter) -> None:
    for cell in nb.cells:
        if cell.cell_type != "markdown":
            continue
        lines = cell.source.splitlines()
        for i, line in enumerate(lines):
            if line.startswith("# "):
                lines[i] = f"# {chapter.label}"
                cell.source = "\n".join(lines)
                return
    nb.cells.insert(0, nbformat.v4.new_markdown_cell(f"# {chapter.label}"))
