"""HTML to text: keep the article, drop the navigation, banners, footers and scripts around it.

Web pages are mostly not their article. Extraction is the first and largest filter of every
web-text pipeline (FineWeb keeps ~1/3 of a WARC record's bytes with trafilatura; RefinedWeb
likewise). This extractor follows the two ideas the industry's tools share:

1. **Structure.** Text inside ``<script>``, ``<style>``, ``<head>``, forms, and containers whose tag
   (``nav``, ``header``, ``footer``, ``aside``) or ``class``/``id`` names them boilerplate
   (``menu``, ``sidebar``, ``cookie``, ``share``, ``related``, ``comment``...) is dropped —
   what trafilatura's and resiliparse's main-content rules do (Barbaresi, "Trafilatura: A Web
   Scraping Library and Command-line Tool for Text Discovery and Extraction", ACL 2021).
2. **Link density.** The rest is cut into blocks (paragraphs, headings, list items, cells), and a
   block whose text is mostly link text is a menu, however it is marked up — the jusText rule
   (Pomikálek, "Removing Boilerplate and Duplicate Content from Web Corpora", PhD thesis 2011).

The tokenizer is one regular expression, so malformed markup (stray or missing closing tags, a
bare ``<``) never stops it: an unmatched closing tag is ignored and an unclosed element ends at
its parent's end. What it leaves out: JavaScript-rendered pages, tables as tables, and the
context rules of jusText (a short block between two good ones). Taught in chapter 10
(solutions/10_data).
"""

from __future__ import annotations

import html as html_lib
import re
from dataclasses import dataclass, field

from llmlab.utils import reject_unknown_keys

TOKEN = re.compile(
    r"<!--.*?(?:-->|\Z)"                               # a comment (unterminated: to the end)
    r"|<![^>]*>|<\?[^>]*>"                             # doctype, processing instruction
    r"|<(/?)([a-zA-Z][a-zA-Z0-9:-]*)((?:[^>\"']|\"[^\"]*\"|'[^']*')*)>"  # a tag: /, name, attrs
    r"|[^<]+|<",                                       # text; a '<' that opens no tag is text
    re.DOTALL)
ATTR = re.compile(r"""(?:class|id)\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s>]+))""", re.IGNORECASE)
RAW_TEXT = frozenset({"script", "style", "noscript", "template", "svg", "iframe", "textarea",
                      "select", "math"})
VOID = frozenset({"br", "hr", "img", "input", "meta", "link", "area", "base", "col", "embed",
                  "source", "track", "wbr", "param"})
BLOCK = frozenset({"p", "div", "h1", "h2", "h3", "h4", "h5", "h6", "li", "ul", "ol", "pre",
                   "blockquote", "table", "tr", "td", "th", "article", "section", "main",
                   "header", "footer", "nav", "aside", "dd", "dt", "dl", "figure", "figcaption",
                   "form", "body", "html", "br", "hr", "title", "head"})
BOILERPLATE_TAGS = frozenset({"nav", "header", "footer", "aside", "form", "button", "head",
                              "label", "menu"})
BOILERPLATE_NAMES = re.compile(
    r"(?:^|[\s_-])(nav|navbar|navigation|menu|header|footer|sidebar|cookie|consent|banner|share|"
    r"social|breadcrumbs?|related|comments?|meta|signature|copyright|logo|advert|ads?|promo|"
    r"newsletter|subscribe|popup|modal|pagination|toolbar|widget)(?:$|[\s_-])", re.IGNORECASE)


@reject_unknown_keys
@dataclass
class ExtractConfig:
    """Knobs of :func:`html_to_text`."""

    max_link_density: float = 0.5  # a block with more link text than this is navigation
    max_chars: int = 5_000_000  # a page larger than this is refused (counted, not parsed)
    boilerplate_tags: frozenset[str] = field(default=BOILERPLATE_TAGS)
    boilerplate_names: re.Pattern[str] = field(default=BOILERPLATE_NAMES)


@dataclass
class Block:
    """A run of text between block-level tags, and how much of it is link text."""

    parts: list[str] = field(default_factory=list)
    link_chars: int = 0
    pre: bool = False

    def text(self) -> str:
        raw = "".join(self.parts)
        return raw.strip("\n") if self.pre else " ".join(raw.split())


def _boilerplate(tag: str, attrs: str, cfg: ExtractConfig) -> bool:
    if tag in cfg.boilerplate_tags:
        return True
    for m in ATTR.finditer(attrs):
        value = next(g for g in m.groups() if g is not None)
        if cfg.boilerplate_names.search(value):
            return True
    return False


def decode_html(raw: bytes) -> str:
    """Bytes of a page to text: UTF-8, else the charset its ``<meta>`` declares; a ValueError
    naming the problem when neither decodes it."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        m = re.search(rb"""charset\s*=\s*["']?([A-Za-z0-9_-]+)""", raw[:4096], re.IGNORECASE)
        if m and m.group(1).lower() not in (b"utf-8", b"utf8"):
            try:
                return raw.decode(m.group(1).decode("ascii"))
            except (LookupError, UnicodeDecodeError):
                pass
        raise ValueError(f"the page is not valid UTF-8 ({err.reason} at byte {err.start}) and "
                         "declares no charset that decodes it") from None


def extract_blocks(html: str, cfg: ExtractConfig | None = None) -> list[Block]:
    """The page's text blocks outside boilerplate containers, in document order (before the
    link-density rule)."""
    cfg = cfg or ExtractConfig()
    stack: list[tuple[str, bool]] = []  # open elements: (tag, is boilerplate)
    hidden = 0  # how many open elements are boilerplate
    links = 0  # how many open <a>
    blocks = [Block()]
    pos = 0
    while pos < len(html):
        m = TOKEN.match(html, pos)
        assert m is not None  # the last alternative matches any single character
        pos = m.end()
        closing, tag = m.group(1), m.group(2)
        if tag is None:
            text = m.group(0)
            if text.startswith("<") and len(text) > 1:
                continue  # comment, doctype, processing instruction
            if not hidden:
                text = html_lib.unescape(text)
                blocks[-1].parts.append(text)
                if links:
                    blocks[-1].link_chars += len("".join(text.split()))
            continue
        tag = tag.lower()
        if not closing and tag in RAW_TEXT:
            end = re.compile(rf"</{tag}\s*>", re.IGNORECASE).search(html, pos)
            pos = end.end() if end else len(html)
            continue
        if tag in BLOCK and blocks[-1].parts:
            blocks.append(Block(pre=any(t == "pre" for t, _ in stack)))
        if closing:
            if any(t == tag for t, _ in stack):  # an unmatched closing tag is ignored
                while stack:
                    t, boiler = stack.pop()
                    hidden -= boiler
                    links -= t == "a"
                    if t == tag:
                        break
            if tag == "pre":
                blocks[-1].pre = False
            continue
        if tag in VOID:
            continue
        if stack and stack[-1][0] == "p" and tag in BLOCK:  # a block closes an open <p>
            stack.pop()
        boiler = _boilerplate(tag, m.group(3) or "", cfg)
        stack.append((tag, boiler))
        hidden += boiler
        links += tag == "a"
        if tag == "pre":
            blocks[-1].pre = True
    return [b for b in blocks if b.parts]


def html_to_text(html: str | bytes, cfg: ExtractConfig | None = None) -> str:
    """The main text of a page, one block per line.

    ``html``: the page as text (or bytes, decoded by :func:`decode_html`). Raises ``ValueError``
    for a page over ``cfg.max_chars`` or bytes that do not decode; an empty page gives ``""``.
    """
    cfg = cfg or ExtractConfig()
    if isinstance(html, bytes):
        if len(html) > cfg.max_chars:
            raise ValueError(f"page of {len(html):,} bytes is over the {cfg.max_chars:,} limit")
        html = decode_html(html)
    if not isinstance(html, str):
        raise ValueError(f"html must be str or bytes, got {type(html).__name__}")
    if len(html) > cfg.max_chars:
        raise ValueError(f"page of {len(html):,} characters is over the {cfg.max_chars:,} limit")
    lines = []
    for block in extract_blocks(html, cfg):
        text = block.text()
        if not text.strip():
            continue
        if block.link_chars / max(1, len("".join(text.split()))) > cfg.max_link_density:
            continue
        lines.append(text)
    return "\n".join(lines)
