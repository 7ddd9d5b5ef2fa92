"""Real text every machine has offline, for measuring tokenizers: the Python standard library's
source code and its docstrings (English prose), read through the book's corpus loader
(:mod:`llmlab.data.corpus`), and an original Chinese text shipped with llmlab (~9,400 characters
of expository prose: half about language models, half about everyday life).

Files come in the corpus loader's sorted order, so a given Python version always yields the
same text. Taught in chapter 01 (solutions/01_tokenization).
"""

from __future__ import annotations

import ast
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path

from llmlab.data.corpus import load_documents

_ZH = Path(__file__).with_name("data") / "zh_sample.txt"


def _take(texts: Iterable[str], max_chars: int, sep: str) -> str:
    out, n = [], 0
    for t in texts:
        if n >= max_chars:
            break
        out.append(t[: max_chars - n])
        n += len(out[-1]) + len(sep)
    return sep.join(out)


def _sources() -> Iterator[str]:
    return (d.text for d in load_documents())


def python_source(max_chars: int = 1_000_000, sep: str = "\n") -> str:
    """Up to ``max_chars`` characters of standard-library source code, files joined by ``sep``."""
    return _take(_sources(), max_chars, sep)


def _docstrings(source: str) -> Iterator[str]:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node)
            if doc and len(doc) > 80:
                yield doc


def python_docstrings(max_chars: int = 1_000_000, sep: str = "\n\n") -> str:
    """Up to ``max_chars`` characters of English prose: the standard library's docstrings."""
    return _take((d for s in _sources() for d in _docstrings(s)), max_chars, sep)


def chinese_text() -> str:
    """About 9,400 characters of original modern Chinese prose (ships with llmlab): tokenization,
    training, attention, parallelism, fine-tuning, alignment, quantization, caching and serving,
    interleaved with everyday topics (a market, a dinner, paper and printing, a train journey,
    the seasons) so the vocabulary is not all technical."""
    return _ZH.read_text(encoding="utf-8")
