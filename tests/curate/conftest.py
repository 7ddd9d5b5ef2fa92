"""Shared data for the curation tests: the shipped crawl and its extracted text, computed once."""

from __future__ import annotations

import pytest
import torch

from llmlab.curate import html_to_text, load_crawl


@pytest.fixture(autouse=True)
def one_thread():
    """Small ops are fastest on one thread (and two threads fight on a busy 2-core machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def crawl():
    return load_crawl()


@pytest.fixture(scope="session")
def texts(crawl):
    """Each page's extracted main text."""
    return [html_to_text(d.text) for d in crawl]


@pytest.fixture(scope="session")
def english(crawl, texts):
    """Extracted texts of English pages that are not empty (what the rule filters see)."""
    return [t for d, t in zip(crawl, texts) if d.meta["lang"] == "en" and t.strip()]
