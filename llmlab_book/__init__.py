"""The book's courseware: what the chapters' check cells need and the library does not.

One module per chapter, ``llmlab_book.chNN_topic`` (``ch00_intro`` for ``solutions/00_intro``):
the reference answers a chapter checks against when llmlab has no such function (chapter 00's
warm-up), and the chapter's catalogue of plausible wrong answers (:mod:`llmlab_book.catalogue`),
which its checks name and :mod:`llmlab_book.verify` grades. ``llmlab`` never imports this
package; it imports ``llmlab`` and ``llmlab.grading``.
"""

from __future__ import annotations

import importlib
from types import ModuleType


def chapter_module(slug: str) -> ModuleType | None:
    """The courseware module of chapter ``slug`` (``"00_intro"`` -> ``llmlab_book.ch00_intro``),
    or None when the chapter has none."""
    try:
        return importlib.import_module(f"{__name__}.ch{slug}")
    except ModuleNotFoundError as exc:
        if exc.name != f"{__name__}.ch{slug}":
            raise
        return None


__all__ = ["chapter_module"]
