"""The offline text samples: deterministic, sized as asked, of the kind they claim."""

from __future__ import annotations

import regex

from llmlab.tokenizer.samples import chinese_text, python_docstrings, python_source


def test_sizes_and_determinism():
    assert len(python_source(10_000)) == 10_000 == len(python_docstrings(10_000))
    assert python_source(5_000) == python_source(5_000)


def test_kinds():
    assert "def " in python_source(50_000) and "import " in python_source(50_000)
    prose = python_docstrings(50_000)
    assert "def " not in prose[:2000] and " the " in prose
    zh = chinese_text()
    assert len(regex.findall(r"\p{Han}", zh)) > 1000
