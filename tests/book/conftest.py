"""Fixtures of the book tests: the site built from solutions/, served locally, and a browser."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest
from filelock import FileLock

ROOT = Path(__file__).resolve().parents[2]
# `book` is a folder of the repository, not an installed package; book_browser sits next to this.
for path in (ROOT, Path(__file__).resolve().parent):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from book_browser import Chromium, SiteServer, find_chromium  # noqa: E402

from book.build import BOOK, build  # noqa: E402

ARTIFACTS = BOOK / "_build" / "screenshots"


@pytest.fixture(scope="session")
def site(tmp_path_factory) -> Path:
    """The book built from the repository's solutions/ and bench/results/ (its html/ folder).

    Built once per test run: under pytest-xdist the workers share one build (the first one
    builds while the others wait on a lock), since they would otherwise write the same files.
    """
    run_dir = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        run_dir = run_dir.parent  # shared by every worker of this run
    done = run_dir / "book-site.built"
    with FileLock(run_dir / "book-site.lock"):
        if not done.is_file():
            html = build(ROOT / "solutions", BOOK / "_build" / "test", ROOT / "bench" / "results", fresh=True)
            done.write_text(str(html))
    return Path(done.read_text())


@pytest.fixture(scope="session")
def server(site: Path):
    served = SiteServer(site)
    yield served
    served.close()


@pytest.fixture(scope="session")
def chromium():
    executable = find_chromium()
    if executable is None:
        pytest.skip("Chromium is not installed (apt-get install chromium): the browser tests need it")
    browser = Chromium(executable)
    yield browser
    browser.close()


@pytest.fixture(scope="session")
def artifacts() -> Path:
    """Where the browser tests save their screenshots (git-ignored, kept after the run)."""
    shutil.rmtree(ARTIFACTS, ignore_errors=True)  # no screenshot of a page that is gone
    ARTIFACTS.mkdir(parents=True)
    return ARTIFACTS
