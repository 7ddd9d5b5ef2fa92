"""The built book in headless Chromium: every page as a reader sees it.

Each page is loaded once from a local server; the tests then check what the reader gets: math
typeset by the site's own MathJax, figures that load, internal links that resolve, no request
leaving the machine, no script error, widgets rendered from their saved state, solutions folded,
and a search that finds "attention". Screenshots land in book/_build/screenshots/.
"""

from __future__ import annotations

import re
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from urllib.parse import urldefrag, urlsplit

import pytest
from book_browser import PageLoad

from book.chapters import find_chapters

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[2]

CHAPTERS = [f"{c.docname}.html" for c in find_chapters(ROOT / "solutions")]
PAGES = ["intro.html", *CHAPTERS, "glossary.html", "benchmarks.html"]

# Everything the tests read from a loaded page, in one evaluation.
FACTS = """(() => {
  const prose = document.querySelector('main').cloneNode(true);
  prose.querySelectorAll('pre, code, script, style, mjx-container, .highlight')
       .forEach(e => e.remove());
  const math = Array.from(document.querySelectorAll('main .math'));
  const images = Array.from(document.querySelectorAll('main img'));
  return {
    title: document.title,
    text: prose.innerText,
    math: math.length,
    untypeset: math.filter(e => !e.querySelector('mjx-container'))
                   .map(e => e.textContent.slice(0, 80)),
    images: images.map(i => ({src: i.currentSrc || i.src, ok: i.complete && i.naturalWidth > 0})),
    links: Array.from(document.querySelectorAll('a[href]')).map(a => a.href),
    widgetViews: document.querySelectorAll(
        'script[type="application/vnd.jupyter.widget-view+json"]').length,
    widgetState: document.querySelectorAll(
        'script[type="application/vnd.jupyter.widget-state+json"]').length,
    widgetsRendered: document.querySelectorAll('main .jupyter-widgets').length,
    solutions: Array.from(document.querySelectorAll('details.hide.above-input')).map(d => ({
        open: d.open, label: d.querySelector('summary').innerText.trim()})),
  };
})()"""
WAIT_MATH = "!window.MathJax || !MathJax.startup || MathJax.startup.promise.then(() => true)"
WAIT_WIDGETS = """
  !document.querySelector('script[type="application/vnd.jupyter.widget-state+json"]')
  || document.querySelectorAll('main .jupyter-widgets').length > 0"""
WAIT_IMAGES = "Array.from(document.images).every(i => i.complete)"


@dataclass
class Visit:
    load: PageLoad
    facts: dict


_visits: dict[str, Visit] = {}


@pytest.fixture
def visit(chromium, server, artifacts):
    """Load a page of the site (once per session), wait until it settles, screenshot it."""

    def _visit(page: str) -> Visit:
        if page not in _visits:
            url = f"{server.origin}/{page}"
            chromium.load(url)
            chromium.evaluate("document.querySelectorAll('img').forEach(i => i.loading = 'eager')")
            for condition in (WAIT_MATH, WAIT_WIDGETS, WAIT_IMAGES):
                chromium.wait_for(condition)
            facts = chromium.evaluate(FACTS)
            chromium.screenshot_pages(artifacts / _stem(page))
            _visits[page] = Visit(chromium.report(url), facts)
        return _visits[page]

    return _visit


def _stem(page: str) -> str:
    return Path(page).with_suffix("").as_posix().replace("/", "__")


@pytest.mark.parametrize("page", PAGES)
def test_no_request_leaves_the_machine(visit, server, page):
    load = visit(page).load
    off_machine = [u for u in load.requests if not u.startswith((server.origin, "data:", "blob:"))]
    assert load.requests, f"{page}: no request recorded at all — is the page being loaded?"
    assert not off_machine, f"{page} requested addresses off this machine: {off_machine}"


@pytest.mark.parametrize("page", PAGES)
def test_every_resource_loads_without_script_errors(visit, page):
    load = visit(page).load
    assert not load.failures, f"{page}: requests failed: {load.failures}"
    assert not load.errors, f"{page}: script errors: {load.errors}"


@pytest.mark.parametrize("page", PAGES)
def test_math_is_typeset(visit, page):
    facts = visit(page).facts
    assert not facts["untypeset"], f"{page}: math MathJax did not typeset: {facts['untypeset']}"
    for raw in ("$$", "\\(", "\\["):
        assert raw not in facts["text"], f"{page}: raw {raw!r} in the text: math was not parsed"


def test_chapters_show_math(visit):
    """The book's chapters are mathematical: at least one page carries typeset formulas."""
    if not CHAPTERS:
        pytest.skip("no chapter in solutions/ yet")
    assert any(visit(page).facts["math"] for page in CHAPTERS), "no chapter has typeset math"


@pytest.mark.parametrize("page", PAGES)
def test_figures_load(visit, page):
    broken = [i["src"] for i in visit(page).facts["images"] if not i["ok"]]
    assert not broken, f"{page}: images that did not load: {broken}"


@pytest.mark.parametrize("page", CHAPTERS)
def test_chapter_has_a_figure(visit, page):
    figures = [i for i in visit(page).facts["images"] if "/_images/" in i["src"]]
    assert figures, f"{page}: the chapter shows no figure (every chapter has at least one)"


@pytest.mark.parametrize("page", PAGES)
def test_internal_links_resolve(visit, server, page):
    internal = {u for u in visit(page).facts["links"] if u.startswith(server.origin)}
    broken = [u for u in sorted(internal) if not _resolves(u)]
    assert not broken, f"{page}: broken internal links: {broken}"


@cache
def _fetch(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as reply:
            body = reply.read()
            is_html = reply.headers.get_content_type() == "text/html"
            return reply.status, body.decode("utf-8", "replace") if is_html else ""
    except urllib.error.HTTPError as error:
        return error.code, ""


def _resolves(url: str) -> bool:
    """The target exists, and so does the anchor when the link names one."""
    target, fragment = urldefrag(url)
    if urlsplit(target).path.endswith("/search.html"):
        target = target.split("?")[0]
    status, html = _fetch(target)
    if status != 200:
        return False
    return not fragment or re.search(rf'\bid="{re.escape(fragment)}"', html) is not None


@pytest.mark.parametrize("page", CHAPTERS)
def test_saved_widgets_render(visit, page):
    facts = visit(page).facts
    if not facts["widgetViews"]:
        pytest.skip(f"{page} has no widget output")
    assert facts["widgetState"], f"{page}: widget views but no saved widget state in the notebook"
    assert facts["widgetsRendered"] >= 1, f"{page}: the widget manager rendered no widget"


@pytest.mark.parametrize("page", CHAPTERS)
def test_solutions_are_folded_behind_a_toggle(visit, chromium, server, artifacts, page):
    solutions = visit(page).facts["solutions"]
    if not solutions:
        pytest.skip(f"{page} has no solution code cell")
    assert all(not s["open"] and s["label"] == "Show solution" for s in solutions), solutions
    chromium.load(f"{server.origin}/{page}")
    opened = chromium.evaluate("""(() => {
      const d = document.querySelector('details.hide.above-input');
      d.scrollIntoView(); window.scrollBy(0, -120); d.querySelector('summary').click();
      const code = d.querySelector('.cell_input');
      return {open: d.open, visible: code.getBoundingClientRect().height > 0};
    })()""")
    time.sleep(0.6)  # the toggle fades the code in
    chromium.screenshot(artifacts / f"{_stem(page)}__solution_open.png")
    assert opened == {"open": True, "visible": True}, f"{page}: the toggle did not open: {opened}"


def test_search_finds_attention(chromium, server, artifacts):
    chromium.load(f"{server.origin}/search.html?q=attention")
    found = chromium.wait_for("document.querySelectorAll('#search-results ul.search li').length")
    chromium.screenshot(artifacts / "search__attention.png")
    assert found, "the search page found nothing for 'attention'"
    titles = chromium.evaluate(
        "Array.from(document.querySelectorAll('#search-results ul.search li a')).map(a => a.innerText)"
    )
    assert any(titles), f"search results have no titles: {titles}"
