"""Real text every Python machine has, gathered for the book's offline crawl (build time only).

The sources, each a list of :class:`Source` (a name, a domain, a language and the text):

- ``docs``: the standard library's documentation topics (``pydoc_data.topics``, the language
  reference ``help()`` shows) and the docstrings of its modules (read through
  :func:`llmlab.data.load_documents`);
- ``readme``: the long descriptions (READMEs, changelogs) of the installed distributions'
  metadata;
- ``license``: the licence files those distributions ship — hundreds of near-identical MIT, BSD
  and Apache texts, the natural near-duplicates of any crawl;
- ``i18n``: the translated messages of the installed packages' gettext catalogues (``*.po``:
  Sphinx and its extensions ship dozens of languages), grouped by language, and the Chinese
  sample that ships with llmlab (:func:`llmlab.tokenizer.samples.chinese_text`).

What is installed differs from machine to machine and the standard library from one Python to
the next, so this runs once, on the machine that builds the asset
(:mod:`llmlab.curate.crawl_build`); the chapter loads the frozen result. Taught in chapter 10
(solutions/10_data).
"""

from __future__ import annotations

import ast
import importlib.metadata as metadata
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

from llmlab.data.corpus import load_documents


@dataclass(frozen=True)
class Source:
    """One piece of real text before it becomes pages: where from, which domain, which language."""

    name: str
    domain: str
    lang: str
    text: str


def docs_sources(min_chars: int = 400) -> list[Source]:
    """The documentation topics and the stdlib modules' docstrings (module, classes, functions)."""
    import pydoc_data.topics

    out = [Source(f"pydoc/{k}", "docs", "en", v) for k, v in sorted(pydoc_data.topics.topics.items())
           if len(v) >= min_chars]
    for doc in load_documents():
        text = "\n\n".join(_docstrings(doc.text))
        if len(text) >= min_chars:
            out.append(Source(f"stdlib/{doc.name}", "docs", "en", text))
    return out


def _docstrings(source: str) -> list[str]:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return []
    out = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node)
            if doc and len(doc) >= 120:
                out.append(doc)
    return out


def _distributions(exclude: tuple[str, ...]) -> list[metadata.Distribution]:
    seen, out = set(), []
    for dist in metadata.distributions():
        name = (dist.metadata.get("Name") or "").lower()
        if not name or name in seen or name in exclude:
            continue
        seen.add(name)
        out.append(dist)
    return sorted(out, key=lambda d: d.metadata["Name"].lower())


def readme_sources(min_chars: int = 400, exclude: tuple[str, ...] = ("llmlab",)) -> list[Source]:
    """Each installed distribution's long description (its README, often with a changelog)."""
    out = []
    for dist in _distributions(exclude):
        text = dist.metadata.get_payload() or dist.metadata.get("Description") or ""
        if len(text) >= min_chars:
            out.append(Source(f"readme/{dist.metadata['Name'].lower()}", "readme", "en", text))
    return out


LICENSE_FILE = re.compile(r"^(LICEN[CS]E|COPYING|NOTICE)", re.IGNORECASE)


def license_sources(min_chars: int = 300, exclude: tuple[str, ...] = ("llmlab",)) -> list[Source]:
    """The licence files the installed distributions ship (``LICENSE*``, ``COPYING*``)."""
    out = []
    for dist in _distributions(exclude):
        for f in sorted(dist.files or [], key=str):
            if not LICENSE_FILE.match(f.name):
                continue
            try:
                text = f.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError):
                continue
            if text and len(text) >= min_chars:
                out.append(Source(f"license/{dist.metadata['Name'].lower()}/{f.name}", "license",
                                  "en", text))
    return out


_PO_STRING = re.compile(r'"((?:[^"\\]|\\.)*)"')
_PO_MSGSTR = re.compile(r'^msgstr(?:\[\d\])? ((?:"(?:[^"\\]|\\.)*"\s*)+)', re.MULTILINE)
_TAG = re.compile(r"<[^>]*>")
_PLACEHOLDER = re.compile(r"%\(?\w*\)?[sdr]|\{[^}]*\}|%s|%r|%d")
_ESCAPE = re.compile(r"\\(u[0-9a-fA-F]{4}|.)")
_SIMPLE = {"n": "\n", "t": "\t", '"': '"', "\\": "\\"}


def _unescape(raw: str) -> str:
    """A .po string's C-style escapes (\\n, \\", \\uXXXX) to their characters."""
    return _ESCAPE.sub(lambda m: chr(int(m.group(1)[1:], 16)) if len(m.group(1)) == 5
                       else _SIMPLE.get(m.group(1), m.group(1)), raw)


def _po_messages(path: Path, min_chars: int) -> list[str]:
    text = path.read_text(encoding="utf-8", errors="replace")
    out = []
    for m in _PO_MSGSTR.finditer(text):
        msg = _unescape("".join(_PO_STRING.findall(m.group(1))))
        if "Project-Id-Version" in msg or "Content-Type:" in msg:
            continue  # the catalogue's header, not a message
        msg = " ".join(_PLACEHOLDER.sub("", _TAG.sub("", msg)).split())
        if len(msg) >= min_chars:
            out.append(msg)
    return out


def _po_language(path: Path) -> str:
    """'fr' for .../fr/LC_MESSAGES/x.po, 'pt' for pt_BR, 'zh' for zh_CN (macro-languages only)."""
    for part in reversed(path.parts):
        if part == "LC_MESSAGES":
            continue
        m = re.fullmatch(r"([a-z]{2,3})(?:[_@-].*)?", part)
        if m and path.parts.index(part) == len(path.parts) - 3:
            return m.group(1)
    return ""


def i18n_sources(site_packages: Path, languages: tuple[str, ...], min_chars: int = 30) -> list[Source]:
    """The translated messages of every ``*.po`` under ``site_packages``, one source per language
    and catalogue, for the languages asked for; and the Chinese sample that ships with llmlab."""
    from llmlab.tokenizer.samples import chinese_text

    out = []
    for path in sorted(site_packages.rglob("*.po"), key=lambda p: p.as_posix()):
        lang = _po_language(path)
        if lang not in languages:
            continue
        msgs = list(dict.fromkeys(_po_messages(path, min_chars)))  # unique, in order
        if len(msgs) >= 3:
            name = path.relative_to(site_packages).as_posix()
            out.append(Source(f"po/{name}", "i18n", lang, "\n\n".join(msgs)))
    out.append(Source("zh_sample", "i18n", "zh", chinese_text()))
    return out
