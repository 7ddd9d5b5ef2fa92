"""The built site's HTML, read as files: offline, complete, solutions folded, tests hidden."""

from __future__ import annotations

import html
import re
from html.parser import HTMLParser
from pathlib import Path

import nbformat

from book.chapters import find_chapters, is_hidden_test, is_solution

ROOT = Path(__file__).resolve().parents[2]
CHAPTERS = find_chapters(ROOT / "solutions")


class _Resources(HTMLParser):
    """Collect what a page loads: scripts, stylesheets, images, frames, and nav links."""

    def __init__(self) -> None:
        super().__init__()
        self.loaded: list[str] = []
        self.nav: list[str] = []
        self._in_nav = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag in ("script", "img", "iframe", "source", "audio", "video") and a.get("src"):
            self.loaded.append(a["src"])
        if (
            tag == "link"
            and a.get("href")
            and {"stylesheet", "preload", "icon"} & set((a.get("rel") or "").split())
        ):
            self.loaded.append(a["href"])
        if tag == "nav" and "bd-docs-nav" in (a.get("class") or ""):
            self._in_nav += 1
        if tag == "style" or (tag == "link" and "import" in (a.get("rel") or "")):
            self.loaded.append("<inline style>")

    def handle_endtag(self, tag: str) -> None:
        if tag == "nav" and self._in_nav:
            self._in_nav -= 1

    def handle_data(self, data: str) -> None:
        if self._in_nav and data.strip():
            self.nav.append(data.strip())


def _parse(path: Path) -> _Resources:
    parser = _Resources()
    parser.feed(path.read_text(encoding="utf-8"))
    return parser


def test_no_page_loads_anything_from_another_site(site):
    pages = sorted(site.rglob("*.html"))
    assert len(pages) >= 4 + len(CHAPTERS)
    offenders = {}
    for page in pages:
        external = [u for u in _parse(page).loaded if re.match(r"^(https?:)?//", u)]
        css_imports = re.findall(r"@import\s+url\(['\"]?(?:https?:)?//", page.read_text("utf-8"))
        if external or css_imports:
            offenders[str(page.relative_to(site))] = external + css_imports
    assert not offenders, f"pages that load from other sites: {offenders}"
    for css in site.rglob("*.css"):
        assert not re.search(r"@import\s+url\(['\"]?(?:https?:)?//", css.read_text("utf-8")), css


def test_mathjax_and_widget_manager_are_served_by_the_site(site):
    assert (site / "_static/vendor/mathjax/tex-chtml.js").is_file()
    assert (site / "_static/vendor/mathjax/output/chtml/fonts/woff-v2").is_dir()
    assert (site / "_static/vendor/widgets/embed.js").is_file()
    math_pages = [p for p in site.rglob("*.html") if 'class="math' in p.read_text("utf-8")]
    for page in math_pages:
        scripts = _parse(page).loaded
        assert any(s.split("?")[0].endswith("_static/vendor/mathjax/tex-chtml.js") for s in scripts), page


def test_navigation_lists_the_chapters_in_order_with_numbers(site):
    nav = _parse(site / "intro.html").nav
    labels = [c.label for c in CHAPTERS]
    assert [n for n in nav if n in labels] == labels
    assert "Glossary · 术语表" in nav and "Benchmarks" in nav


def test_landing_page_has_the_chapter_map_and_the_commands(site):
    page = (site / "intro.html").read_text("utf-8")
    text = html.unescape(re.sub(r"<[^>]+>", "", page))
    for chapter in CHAPTERS:
        assert f"{chapter.slug}/{chapter.slug}.html" in page and chapter.budget in text
    for words in ("make lab", "make test", "llmlab grade", "nbgrader"):
        assert words in text, words


def test_chapter_pages_hide_tests_and_fold_every_solution(site):
    for chapter in CHAPTERS:
        page = (site / f"{chapter.docname}.html").read_text("utf-8")
        nb = nbformat.read(chapter.notebook, as_version=4)
        code = [c for c in nb.cells if c.cell_type == "code"]
        shown = [c for c in code if not is_hidden_test(c) and "remove-cell" not in c.metadata.get("tags", [])]
        assert "BEGIN HIDDEN TESTS" not in page and "END HIDDEN TESTS" not in page
        assert "BEGIN SOLUTION" not in page
        assert len(re.findall(r'<div class="cell[ "]', page)) == len(shown), chapter.slug
        folded = page.count('<details class="admonition hide above-input">')
        assert folded == sum(is_solution(c) for c in shown), chapter.slug


def test_sphinx_builds_without_warnings(site):
    """A warning is a broken reference, a missing image, a bad heading level or bad markup."""
    warnings = (site.parent / "warnings.log").read_text("utf-8").strip()
    assert not warnings, f"the book build warned:\n{warnings}"
