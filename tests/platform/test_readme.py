"""The README's chapter map lists every chapter with the title and budget its notebook states."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmlab.chapters import list_chapters

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


@pytest.mark.parametrize("chapter", list_chapters(ROOT / "solutions"), ids=lambda c: c.slug)
def test_chapter_map_matches_the_notebook(chapter):
    rows = [r for r in README.splitlines() if r.startswith(f"| {chapter.number:02d} |")]
    assert rows, f"README's chapter map has no row for {chapter.slug}"
    assert f"| {chapter.title} |" in rows[0]
    assert f"~{chapter.minutes:g} min · {chapter.ram_gb:g} GB" in rows[0]


def test_quick_start_is_two_commands():
    block = README.split("## Quick start", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    commands = [line.split("#")[0].strip() for line in block.strip().splitlines()]
    assert commands == ["make lab", "make test"]
