"""Build the book site into ``book/_build/html``: ``make book`` runs ``python tools/book.py``,
which is ``python -m book.build``.

Steps: find the chapters in solutions/, stage the book's sources in ``<out>/src`` (the front
matter from book/, the generated pages, a copy of each chapter notebook prepared by
``book.chapters``), install MathJax and the widget manager from npm into a cache
(``book/_build/cache``), run Jupyter Book 1.x (Sphinx) on the stored outputs — nothing is
executed — and copy the scripts under ``_static/vendor``. Staged files are only rewritten when
their content changes, so Sphinx re-reads just the notebooks that changed.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import yaml
from jupyter_book.config import get_final_config

from . import assets
from .chapters import Chapter, book_notebook, find_chapters
from .pages import benchmarks_page, chapter_map, glossary_page, load_glossary

BOOK = Path(__file__).resolve().parent
ROOT = BOOK.parent
FRONT_MATTER = ("intro.md",)  # copied as they are; intro.md includes the generated chapter map
# Extensions Jupyter Book always loads whose features fetch scripts from other sites (thebe's
# kernel client from unpkg.com, hypothes.is / utterances comments); the book uses neither.
OFF_SITE_EXTENSIONS = ("sphinx_thebe", "sphinx_comments")
CHAPTER_ASSETS = {".png", ".jpg", ".jpeg", ".gif", ".svg", ".webp"}  # files a notebook may show


def stage(chapters: list[Chapter], src: Path, bench_results: Path) -> None:
    """Write the Jupyter Book sources for ``chapters`` into ``src``, removing anything stale."""
    files: dict[Path, bytes] = {}
    for name in FRONT_MATTER:
        files[Path(name)] = (BOOK / name).read_bytes()
    for static in (BOOK / "_static").rglob("*"):
        if static.is_file():
            files[static.relative_to(BOOK)] = static.read_bytes()
    files[Path("conf.py")] = _sphinx_conf().encode()
    files[Path("_toc.yml")] = _toc(chapters).encode()
    files[Path("_generated/chapter_map.md")] = chapter_map(chapters).encode()
    glossary = load_glossary(BOOK / "glossary.yml")
    files[Path("glossary.md")] = glossary_page(glossary, chapters).encode()
    intro = (BOOK / "benchmarks.md").read_text(encoding="utf-8")
    files[Path("benchmarks.md")] = benchmarks_page(intro, bench_results).encode()
    for chapter in chapters:
        folder = chapter.notebook.parent
        for asset in folder.rglob("*"):
            if asset.suffix.lower() in CHAPTER_ASSETS and ".ipynb_checkpoints" not in asset.parts:
                files[Path(chapter.slug) / asset.relative_to(folder)] = asset.read_bytes()
        notebook = nbformat.writes(book_notebook(chapter))
        files[Path(chapter.docname + ".ipynb")] = notebook.encode()
    _sync(files, src)


def _sphinx_conf() -> str:
    """Sphinx's conf.py from book/_config.yml (as ``jupyter-book config sphinx`` writes it), plus
    the paths of the scripts the site serves itself."""
    config = yaml.safe_load((BOOK / "_config.yml").read_text(encoding="utf-8"))
    sphinx = config.setdefault("sphinx", {}).setdefault("config", {})
    sphinx["mathjax_path"] = assets.MATHJAX_PATH
    sphinx["nb_ipywidgets_js"] = {assets.WIDGETS_JS: {}}
    # book/_static is staged as src/_static, so Jupyter Book finds the same CSS in either.
    toc = {"external_toc_path": "_toc.yml", "latex_individualpages": False}
    final, _ = get_final_config(user_yaml=config, sourcedir=BOOK, cli_config=toc, raise_on_invalid=True)
    final["extensions"] = [e for e in final["extensions"] if e not in OFF_SITE_EXTENSIONS]
    return "".join(f"{key} = {final[key]!r}\n" for key in sorted(final))


def _toc(chapters: list[Chapter]) -> str:
    """The table of contents: the landing page, the chapters in number order, then reference."""
    toc = {
        "format": "jb-book",
        "root": "intro",
        "parts": [
            {
                "caption": "Chapters",
                "chapters": [{"file": c.docname, "title": c.label} for c in chapters],
            },
            {"caption": "Reference", "chapters": [{"file": "glossary"}, {"file": "benchmarks"}]},
        ],
    }
    if not chapters:
        toc["parts"].pop(0)
    return yaml.safe_dump(toc, allow_unicode=True, sort_keys=False)


def _sync(files: dict[Path, bytes], root: Path) -> None:
    """Make ``root`` hold exactly ``files``, leaving unchanged files (and their mtimes) alone."""
    root.mkdir(parents=True, exist_ok=True)
    for relative, content in files.items():
        path = root / relative
        if path.is_file() and path.read_bytes() == content:
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    wanted = {root / relative for relative in files}
    for path in sorted(root.rglob("*"), reverse=True):  # children before their folders
        if path.is_file() and path not in wanted:
            path.unlink()
        elif path.is_dir() and not any(path.iterdir()):
            path.rmdir()


def build(
    solutions: Path,
    out: Path,
    bench_results: Path,
    cache: Path = BOOK / "_build" / "cache",
    quiet: bool = True,
    fresh: bool = False,
) -> Path:
    """Build the site into ``out/html`` and return that path.

    npm packages are cached in ``cache``; Sphinx's warnings go to ``out/warnings.log`` (all of
    them only with ``fresh``, which re-reads every source instead of the changed ones).
    """
    src, html = out / "src", out / "html"
    stage(find_chapters(solutions), src, bench_results)
    node_modules = assets.install(cache)
    # -a writes every page: Sphinx skips pages (and copying _static/) when no source changed,
    # which would keep a changed stylesheet out of the site and its cache-busting checksums.
    sphinx = [sys.executable, "-m", "sphinx", "-b", "html", "-a", "-d", str(out / "doctrees")]
    sphinx += ["-w", str(out / "warnings.log"), *(["-q"] if quiet else []), *(["-E"] if fresh else [])]
    subprocess.run([*sphinx, str(src), str(html)], check=True)
    assets.vendor(node_modules, html / "_static")
    (html / ".nojekyll").touch()  # hosts that run Jekyll would skip _static/ and _images/
    return html


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m book.build", description="Build the book site from solutions/."
    )
    parser.add_argument("--solutions", type=Path, default=ROOT / "solutions", help="chapter notebooks")
    parser.add_argument("--out", type=Path, default=BOOK / "_build", help="build directory")
    parser.add_argument("--bench-results", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--verbose", action="store_true", help="show Sphinx's progress")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    html = build(args.solutions, args.out, args.bench_results, quiet=not args.verbose)
    print(f"book built in {time.perf_counter() - start:.0f} s: {html / 'index.html'}")


if __name__ == "__main__":
    main()
