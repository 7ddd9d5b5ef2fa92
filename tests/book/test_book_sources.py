"""How the book prepares its sources: chapter copies, the table of contents, generated pages."""

from __future__ import annotations

import hashlib
from pathlib import Path

import nbformat
import pytest
import yaml

from book.build import BOOK, _toc, stage
from book.chapters import _summary, book_notebook, find_chapters
from book.pages import benchmarks_page, chapter_map, glossary_page, load_glossary

BUDGET = "**Budget:** ~{minutes} min on 2 CPU cores · peak RAM ~0.5 GB"


def _cell(kind: str, source: str, **nbgrader) -> nbformat.NotebookNode:
    cell = nbformat.v4.new_code_cell(source) if kind == "code" else nbformat.v4.new_markdown_cell(source)
    if nbgrader:
        cell.metadata["nbgrader"] = {"schema_version": 3, **nbgrader}
    return cell


def _chapter(solutions: Path, slug: str, title: str, minutes: int = 1) -> Path:
    """A chapter notebook with a solution, a visible check, two hidden-test cells and a figure."""
    folder = solutions / slug
    folder.mkdir(parents=True)
    figure = nbformat.v4.new_output(
        "display_data", data={"image/png": "iVBORw0KGgo=", "text/plain": "<Figure>"}
    )
    plot = _cell("code", "plt.plot([1, 2])")
    plot.outputs = [figure]
    cells = [
        _cell("markdown", f"# {title}\n\nYou will build a thing. It is useful.\n\n- objective"),
        _cell("markdown", BUDGET.format(minutes=minutes)),
        plot,
        _cell(
            "code",
            "def f(x):\n    ### BEGIN SOLUTION\n    return x\n    ### END SOLUTION",
            solution=True,
            grade=False,
            locked=False,
            grade_id="f",
        ),
        _cell("code", "check(f)", solution=False, grade=True, locked=True, grade_id="f__check", points=1),
        _cell(
            "code",
            "### BEGIN HIDDEN TESTS\nsecret_case(f)\n### END HIDDEN TESTS",
            solution=False,
            grade=True,
            locked=True,
            grade_id="f__hidden",
            points=1,
        ),
        _cell("code", "another_secret(f)", solution=False, grade=True, locked=True, grade_id="g__hidden"),
        _cell(
            "markdown",
            "Because it is the identity.",
            solution=True,
            grade=True,
            locked=False,
            grade_id="why",
            points=1,
        ),
    ]
    path = folder / f"{slug}.ipynb"
    nbformat.write(nbformat.v4.new_notebook(cells=cells), path)
    return path


@pytest.fixture
def solutions(tmp_path: Path) -> Path:
    root = tmp_path / "solutions"
    _chapter(root, "10_serving", "Serving", minutes=3)
    _chapter(root, "02_gpt", "Chapter 2 — A GPT from scratch")
    _chapter(root, "00_intro", "00 · How this book works")
    (root / "notes").mkdir()
    (root / "03_attention").mkdir()  # a chapter folder without its notebook yet
    return root


def test_chapters_in_number_order_with_numbered_titles(solutions):
    chapters = find_chapters(solutions)
    assert [c.label for c in chapters] == [
        "00 · How this book works",
        "02 · A GPT from scratch",
        "10 · Serving",
    ]
    assert chapters[2].budget == "~3 min · 0.5 GB RAM"
    assert chapters[0].summary == "You will build a thing."


@pytest.mark.parametrize(
    "text, summary",
    [
        ("\nModels see numbers. This chapter builds X — and Y.\n", "This chapter builds X — and Y."),
        ("This chapter builds X — " + "and more " * 20 + ".", "This chapter builds X."),
        ("**You will learn**\n\n- a list\n\nPlain prose first. More.", "Plain prose first."),
        ("A `code " + "word " * 40 + "end`.", "A…"),
    ],
)
def test_chapter_map_summary_is_one_short_sentence(text, summary):
    assert _summary(text) == summary


def test_toc_lists_every_chapter_in_order(solutions):
    toc = yaml.safe_load(_toc(find_chapters(solutions)))
    chapters = toc["parts"][0]["chapters"]
    assert [(c["file"], c["title"]) for c in chapters] == [
        ("00_intro/00_intro", "00 · How this book works"),
        ("02_gpt/02_gpt", "02 · A GPT from scratch"),
        ("10_serving/10_serving", "10 · Serving"),
    ]
    assert toc["root"] == "intro"


def test_book_copy_folds_solutions_and_drops_hidden_tests(solutions):
    chapter = find_chapters(solutions)[0]
    original = chapter.notebook.read_bytes()
    nb = book_notebook(chapter)
    sources = [c.source for c in nb.cells]
    assert not any("HIDDEN" in s or "secret" in s for s in sources), sources
    assert len(nb.cells) == 6  # 8 cells minus the 2 hidden-test cells
    code = next(c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == "f")
    assert "hide-input" in code.metadata["tags"]
    assert code.metadata["mystnb"]["code_prompt_show"] == "Show solution"
    assert code.source == "def f(x):\n    return x"
    answer = next(c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == "why")
    assert answer.source.startswith("::::{dropdown} Show solution") and "identity" in answer.source
    assert nb.cells[0].source.startswith("# 00 · How this book works\n")
    assert nb.cells[2].outputs, "stored outputs must be kept"
    assert chapter.notebook.read_bytes() == original, "solutions/ must never be written"


def test_stage_writes_the_book_and_removes_stale_pages(solutions, tmp_path):
    src = tmp_path / "src"
    (src / "99_old").mkdir(parents=True)
    (src / "99_old" / "99_old.ipynb").write_text("{}")
    before = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in solutions.rglob("*.ipynb")}
    stage(find_chapters(solutions), src, tmp_path / "no-results")
    assert not (src / "99_old").exists()
    for name in ("conf.py", "_toc.yml", "intro.md", "glossary.md", "benchmarks.md", "_static/llmlab.css"):
        assert (src / name).is_file(), name
    assert (src / "02_gpt" / "02_gpt.ipynb").is_file()
    assert (
        "[How this book works](<00_intro/00_intro.ipynb>)"
        in (src / "_generated" / "chapter_map.md").read_text()
    )
    conf = (src / "conf.py").read_text()
    assert "mathjax_path = 'vendor/mathjax/tex-chtml.js'" in conf
    assert "nb_ipywidgets_js = {'vendor/widgets/embed.js': {}}" in conf
    assert "sphinx_thebe" not in conf and "'off'" in conf
    assert before == {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in solutions.rglob("*.ipynb")}


def test_chapter_map_links_each_chapter_with_its_budget(solutions):
    table = chapter_map(find_chapters(solutions))
    row = next(line for line in table.splitlines() if line.startswith("| 10 |"))
    assert "[Serving](<10_serving/10_serving.ipynb>)" in row and "~3 min · 0.5 GB RAM" in row


def test_glossary_file_is_valid_and_renders():
    entries = load_glossary(BOOK / "glossary.yml")
    assert entries and all(e.term and e.zh and len(e.chapter) == 2 for e in entries)
    page = glossary_page(entries, [])
    assert "```{glossary}" in page and entries[0].zh in page and "chapter 00 (coming)" in page


@pytest.mark.parametrize(
    "yaml_text, message",
    [
        ("- {term: Token, zh: 词元, chapter: 1, note: x}", "unknown key"),
        ("- {term: Token, chapter: 1}", "missing ['zh']"),
        ("- {term: Token, zh: 词元, chapter: one}", "chapter must be a number"),
        ("- {term: Token, zh: 词元, chapter: 1}\n- {term: token, zh: 词元, chapter: 2}", "listed twice"),
        ("term: Token", "expected a YAML list"),
    ],
)
def test_glossary_rejects_bad_entries(tmp_path, yaml_text, message):
    path = tmp_path / "glossary.yml"
    path.write_text(yaml_text, encoding="utf-8")
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_glossary(path)


def test_benchmarks_page_nests_each_results_table(tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    kv = "### KV cache\n\n#### Decode\n\n| op | ratio |\n|---|---|\n| decode | 0.9 |\n"
    (results / "kvcache.md").write_text(kv)
    (results / "attention.md").write_text("```\n# not a heading\n```\n\n| a |\n|---|\n")
    page = benchmarks_page("# Benchmarks\n", results)
    assert "\n## KV cache\n" in page and "\n### Decode\n" in page and "| decode | 0.9 |" in page
    assert "\n## attention\n" in page and "\n# not a heading\n" in page
    assert page.index("## attention") < page.index("## KV cache")
    assert "No benchmark has been run yet" in benchmarks_page("# Benchmarks\n", tmp_path / "none")
