"""Build the book's offline web crawl: real text rendered as web pages, with every label known.

A web crawl is mostly not the text a model should learn from: navigation, footers and cookie
banners around each article, SEO spam, pages in other languages, personal data, and copies —
the same page under several URLs (exact duplicates) and near-copies (a changed date, a mirror
with an extra line, the same MIT licence with another name in it). This module turns the real
text of :mod:`llmlab.curate.crawl_sources` into such a crawl, and because it does the rendering
and the injecting itself, every page carries its ground truth:

- ``main``: the article's text, one block per line (what a perfect extractor returns);
- ``lang``, ``domain`` (docs, readme, license, i18n, spam) and ``quality`` (good; spam: keyword
  stuffing; seo: a grammatical content-farm article; spun: real sentences with their inner words
  shuffled; listing: a page of links);
- ``pii``: the emails, phone numbers and public IPv4 addresses in ``main`` (``[kind, value]``),
  and ``decoys``: strings that look like them but are not (a four-part version number);
- ``dup_of`` (same ``main`` as an earlier page: a mirror, or the same URL crawled again),
  ``near_dup_of`` (an edited copy of an earlier page) and ``paraphrase_of`` (the same content
  reworded);
- ``split``: train or val, by source, so no copy of a validation page is in training.

Run once, on a machine with the ``dev`` extra installed, to (re)write the shipped asset::

    python -m llmlab.curate.crawl_build --out llmlab/curate/assets/crawl.jsonl.gz

It writes the crawl and ``crawl.json`` beside it (sizes, label counts, sha256, and the Python
and package versions it was built from). The chapter loads the frozen file
(:func:`llmlab.curate.crawl.load_crawl`), so the book prints the same numbers on every machine
and Python version. Taught in chapter 10 (solutions/10_data).
"""

from __future__ import annotations

import argparse
import hashlib
import html
import ipaddress
import json
import random
import re
import sys
import sysconfig
import textwrap
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from llmlab.curate.crawl_sources import (
    Source,
    docs_sources,
    i18n_sources,
    license_sources,
    readme_sources,
)
from llmlab.curate.document import Doc, write_docs
from llmlab.utils import reject_unknown_keys

LANGUAGES = ("fr", "es", "pt", "zh", "ja", "ko", "ru", "tr")
Block = tuple[str, str]  # (kind, text): kind is "h", "p", "li" or "pre"


@reject_unknown_keys
@dataclass
class BuildConfig:
    """How many pages of each kind; the seed makes the build repeatable on one machine."""

    seed: int = 0
    page_chars: int = 2400  # split sources into pages of about this many characters
    pages_per_source: dict[str, int] = field(
        default_factory=lambda: {"docs": 4, "readme": 4, "license": 1, "i18n": 12})
    max_pages: dict[str, int] = field(
        default_factory=lambda: {"docs": 900, "readme": 700, "license": 400, "i18n": 220})
    spam: int = 150
    spun: int = 60
    seo: int = 120
    listing: int = 100
    mirrors: int = 150  # exact copies of a page's text in another site's template
    recrawls: int = 30  # byte-identical copies (the same URL fetched twice)
    near_dups: int = 150
    paraphrases: int = 60  # the same content reworded: invisible to MinHash, close in embedding
    pii_fraction: float = 0.12
    decoy_fraction: float = 0.05
    malformed_fraction: float = 0.03
    val_fraction: float = 0.1


# ---------------------------------------------------------------------------- text -> blocks

_HEADING_RULE = re.compile(r"^\s*([=\-~^*#+])\1{2,}\s*$")
_BULLET = re.compile(r"^\s*(?:[-*+•]|\d+[.)])\s+")
_MD_LINK = re.compile(r"!?\[([^\]]*)\]\([^)]*\)")
_BADGE = re.compile(r"^\s*(\[!\[|!\[|\.\. image::|\.\. \|)")
_HTML_TAG = re.compile(r"</?[a-zA-Z][^>]*>")
_RST_MARK = re.compile(r"``|`_|:[a-z]+:`|`")


def _clean(line: str) -> str:
    line = _HTML_TAG.sub("", _MD_LINK.sub(r"\1", line))
    line = _RST_MARK.sub("", line).replace("**", "")
    return " ".join(line.split())


def to_blocks(text: str) -> list[Block]:
    """Split plain text (docstrings, Markdown, reST) into headings, paragraphs, items and code."""
    blocks: list[Block] = []
    lines = text.replace("\r\n", "\n").split("\n")
    para: list[str] = []
    code: list[str] = []
    fence = False

    def flush() -> None:
        if para:
            t = _clean(" ".join(para))
            if t:
                blocks.append(("p", t))
            para.clear()
        if code:
            blocks.append(("pre", textwrap.dedent("\n".join(code)).strip("\n")))
            code.clear()

    for i, line in enumerate(lines):
        stripped = line.strip()
        if stripped.startswith("```"):
            flush()
            fence = not fence
            continue
        if fence:
            code.append(line.rstrip())
            continue
        nxt = lines[i + 1] if i + 1 < len(lines) else ""
        indent = len(line) - len(line.lstrip())
        if not stripped or _HEADING_RULE.match(line) or _BADGE.match(line):
            flush()
        elif _HEADING_RULE.match(nxt) and len(stripped) < 80:
            flush()
            blocks.append(("h", _clean(stripped)))
        elif stripped.startswith("#") and not stripped.startswith("#!") and len(stripped) < 100 \
                and not code:
            flush()
            blocks.append(("h", _clean(stripped.lstrip("# "))))
        elif blocks and blocks[-1][0] == "li" and 0 < indent <= 4 and not para and not code:
            blocks[-1] = ("li", blocks[-1][1] + " " + _clean(stripped))
        elif (indent > 0 or stripped.startswith((">>>", "$ "))) and not para or code:
            code.append(line.rstrip())
        elif _BULLET.match(line):
            flush()
            blocks.append(("li", _clean(_BULLET.sub("", line))))
        else:
            para.append(stripped)
    flush()
    return [(k, t) for k, t in blocks if t.strip()]


def paginate(blocks: list[Block], page_chars: int, max_pages: int) -> list[list[Block]]:
    """Cut blocks into pages of about ``page_chars`` characters (a page never splits a block)."""
    pages, cur, n = [], [], 0
    for b in blocks:
        if len(b[1]) > page_chars * 2:  # one huge block: truncate it at a line end
            b = (b[0], b[1][: b[1].rfind("\n", 0, page_chars) if "\n" in b[1][:page_chars]
                            else page_chars])
        if cur and n + len(b[1]) > page_chars:
            pages.append(cur)
            cur, n = [], 0
            if len(pages) == max_pages:
                return pages
        cur.append(b)
        n += len(b[1])
    if cur and len(pages) < max_pages:
        pages.append(cur)
    return pages


def main_text(blocks: list[Block]) -> str:
    """The ground-truth extraction: one line per block (code blocks keep their lines)."""
    return "\n".join(t for _, t in blocks)


# ---------------------------------------------------------------------------- personal data

FIRST = ["anna", "ben", "chen", "dara", "emil", "fatima", "goran", "hana", "ivan", "julia",
         "kenji", "lena", "marco", "nadia", "omar", "priya", "quentin", "rosa", "sven", "tariq"]
LAST = ["novak", "schmidt", "wang", "okafor", "silva", "kowalski", "tanaka", "haddad", "berg",
        "moreau", "rossi", "kim", "ivanova", "garcia", "nguyen", "larsen", "petrov", "ali"]
MAIL_DOMAINS = ["mailbox.org", "posteo.net", "fastmail.com", "proton.me", "gmx.de", "web.de",
                "yandex.ru", "qq.com", "outlook.com", "zoho.eu"]
EMAIL_LIKE = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
IPV4_LIKE = re.compile(r"(?<![\d.])(?:\d{1,3}\.){3}\d{1,3}(?![\d.])")


def fake_email(rng: random.Random) -> str:
    sep = rng.choice([".", "_", ""])
    return f"{rng.choice(FIRST)}{sep}{rng.choice(LAST)}{rng.randrange(100) if rng.random() < .3 else ''}" \
           f"@{rng.choice(MAIL_DOMAINS)}"


def fake_phone(rng: random.Random) -> str:
    d = lambda n: "".join(str(rng.randrange(10)) for _ in range(n))  # noqa: E731
    return rng.choice([
        f"+1 ({rng.randrange(201, 989)}) {d(3)}-{d(4)}", f"{rng.randrange(201, 989)}-{d(3)}-{d(4)}",
        f"+44 20 {d(4)} {d(4)}", f"+49 30 {d(4)} {d(4)}", f"+86 138 {d(4)} {d(4)}",
        f"+33 1 {d(2)} {d(2)} {d(2)} {d(2)}"])


def fake_public_ip(rng: random.Random) -> str:
    while True:
        ip = ".".join(str(x) for x in (rng.randrange(11, 224), rng.randrange(256),
                                       rng.randrange(256), rng.randrange(1, 255)))
        if ipaddress.ip_address(ip).is_global:
            return ip


def scrub_natural_pii(text: str, rng: random.Random) -> tuple[str, list[list[str]]]:
    """Replace every real email address with a made-up one, and label public IPv4 addresses."""
    found: list[list[str]] = []

    def swap(m: re.Match[str]) -> str:
        fake = fake_email(rng)
        found.append(["email", fake])
        return fake

    text = EMAIL_LIKE.sub(swap, text)
    for m in IPV4_LIKE.finditer(text):
        try:
            if ipaddress.ip_address(m.group(0)).is_global:
                found.append(["ip", m.group(0)])
        except ValueError:
            continue
    return text, found


PII_TEMPLATES = [
    ("Questions? Write to {email} or call {phone}.", ("email", "phone")),
    ("Maintainer: {name} <{email}>", ("email",)),
    ("The mirror is served from {ip}; report outages to {email}.", ("ip", "email")),
    ("Call us at {phone} (Monday to Friday, 9:00 to 17:00).", ("phone",)),
    ("Contact {name} at {email} for commercial licences.", ("email",)),
    ("Our build server ({ip}) is reachable from the VPN only.", ("ip",)),
]
DECOY_TEMPLATES = [
    "Tested with release {v} on the nightly build of {date}.",
    "Firmware {v} fixes the issue reported on {date}.",
    "The order number is {order}; keep it for your records.",
]


def pii_block(rng: random.Random) -> tuple[Block, list[list[str]]]:
    template, kinds = rng.choice(PII_TEMPLATES)
    values = {"email": fake_email(rng), "phone": fake_phone(rng), "ip": fake_public_ip(rng),
              "name": f"{rng.choice(FIRST).title()} {rng.choice(LAST).title()}"}
    return ("p", template.format(**values)), [[k, values[k]] for k in kinds]


def decoy_block(rng: random.Random) -> tuple[Block, list[str]]:
    v = f"{rng.randrange(1, 9)}.{rng.randrange(0, 30)}.{rng.randrange(0, 20)}.{rng.randrange(1, 9)}"
    date = f"{rng.randrange(2015, 2025)}-{rng.randrange(1, 13):02d}-{rng.randrange(1, 29):02d}"
    order = f"{rng.randrange(10, 99)}-{rng.randrange(100000, 999999)}"
    template = rng.choice(DECOY_TEMPLATES)
    text = template.format(v=v, date=date, order=order)
    return ("p", text), [x for x in (v, date, order) if x in text]


# ---------------------------------------------------------------------------- low-quality pages

SPAM_WORDS = ["cheap", "best", "free", "download", "crack", "casino", "bonus", "viagra", "loans",
              "deal", "discount", "buy", "now", "online", "2024", "top", "10", "hosting", "vpn",
              "coupon", "promo", "win", "click", "here", "limited", "offer", "seo", "backlinks",
              "followers", "instant", "approval", "guaranteed", "rank", "first", "page"]
SPAM_TOPICS = ["python hosting", "vpn deals", "casino bonus", "payday loans", "seo backlinks",
               "crypto signals", "weight loss pills", "instagram followers", "cheap flights"]


def spam_blocks(rng: random.Random) -> list[Block]:
    topic = rng.choice(SPAM_TOPICS)
    blocks: list[Block] = [("h", f"Best {topic.title()} 2024 - Cheap {topic.title()} Free")]
    line = f"{topic} {topic} best {topic} cheap {topic} buy {topic} now"
    for _ in range(rng.randrange(6, 14)):
        words = [rng.choice(SPAM_WORDS) for _ in range(rng.randrange(8, 25))]
        pos = rng.randrange(len(words))
        blocks.append(("p", " ".join(words[:pos] + topic.split() + words[pos:])))
        if rng.random() < 0.4:
            blocks.append(("p", line))
    blocks.append(("p", f"Click here for {topic}!!! Limited offer, {rng.randrange(50, 95)}% off "
                        "today only!!!"))
    return blocks


def spun_blocks(source_blocks: list[Block], rng: random.Random) -> list[Block]:
    """Article spinning: the words of real paragraphs in random order (word counts unchanged)."""
    out = []
    for kind, text in source_blocks:
        if kind == "pre":
            continue
        words = text.split()
        middle = words[1:-1]
        rng.shuffle(middle)  # first and last words stay: capitals and full stops where they were
        out.append((kind, " ".join(words[:1] + middle + words[-1:]) if len(words) > 2 else text))
    return out


SEO_SENTENCES = [
    "Are you looking for the best {topic}?", "In this article, we review the top {n} {topic} of {year}.",
    "Whether you are a beginner or an expert, our guide to {topic} has everything you need.",
    "We have tested every {topic} on the market so you don't have to.",
    "Read on to find out which {topic} is right for you.",
    "Don't forget to share this post with your friends and family!",
    "Click the link below to get an exclusive discount on {topic}.",
    "Our experts compared prices, features and thousands of customer reviews.",
    "Number {k} on our list is the top pick for {year}, with a {p}% discount today.",
    "It is easy to use, affordable and trusted by thousands of happy customers.",
    "Sign up for our newsletter to get the latest deals on {topic}.",
    "Disclaimer: this post contains affiliate links, and we may earn a commission.",
    "Prices and availability are accurate as of the date of publication.",
    "You will not believe how much money you can save with the right {topic}.",
    "Here is everything you need to know about {topic} before you buy.",
    "The secret that the {topic} industry does not want you to know is finally out.",
]


def seo_blocks(rng: random.Random) -> list[Block]:
    """A content-farm article: grammatical, punctuated, no repeated lines — it passes the rule
    filters, and reads like nothing a person wrote to inform."""
    topic = rng.choice(SPAM_TOPICS)
    fill = dict(topic=topic, n=rng.randrange(5, 15), year=rng.randrange(2018, 2025),
                k=rng.randrange(1, 5), p=rng.randrange(10, 70))
    sentences = [t.format(**fill) for t in rng.sample(SEO_SENTENCES, rng.randrange(10, 15))]
    blocks: list[Block] = [("h", f"The {fill['n']} Best {topic.title()} in {fill['year']}: "
                                 "Reviews and Buying Guide")]
    while sentences:
        k = rng.randrange(2, 4)
        blocks.append(("p", " ".join(sentences[:k])))
        sentences = sentences[k:]
    return blocks


def paraphrase(blocks: list[Block], rng: random.Random) -> list[Block]:
    """A terser rewrite with the same content: every fourth word of the prose dropped, so no run
    of five words survives (word-shingle Jaccard near 0) while the vocabulary stays."""
    out = []
    for kind, text in blocks:
        words = text.split()
        if kind in ("p", "li") and len(words) > 4:
            offset = rng.randrange(4)
            text = " ".join(w for i, w in enumerate(words) if i % 4 != offset)
        out.append((kind, text))
    return out


def listing_blocks(titles: list[str], rng: random.Random) -> list[Block]:
    chosen = rng.sample(titles, min(len(titles), rng.randrange(12, 30)))
    return [("h", f"Archive: page {rng.randrange(2, 90)}")] + [("a", t) for t in chosen]


# ---------------------------------------------------------------------------- near duplicates

_NUMBER = re.compile(r"\b\d+(?:\.\d+)*\b")


def near_duplicate(blocks: list[Block], rng: random.Random) -> list[Block]:
    """A lightly edited copy: numbers changed, a word or two swapped, a line added or removed."""
    out = [(k, _NUMBER.sub(lambda m: str(int(m.group(0).split(".")[0]) + 1), t) if rng.random() < .5
            else t) for k, t in blocks]
    prose = [i for i, (k, t) in enumerate(out) if k == "p" and len(t.split()) > 8]
    for i in rng.sample(prose, min(2, len(prose))):
        words = out[i][1].split()
        j = rng.randrange(len(words))
        words[j] = rng.choice(["really", "quite", "also", "now", "then", "simply"])
        out[i] = ("p", " ".join(words))
    r = rng.random()
    if r < 0.4:
        out.append(("p", f"Last updated on {rng.randrange(2018, 2025)}-{rng.randrange(1, 13):02d}-"
                         f"{rng.randrange(1, 29):02d}."))
    elif r < 0.7 and len(out) > 6:
        del out[rng.randrange(1, len(out))]
    return out


# ---------------------------------------------------------------------------- HTML rendering

SITES = ["pydocs.example", "devnotes.example", "packagemirror.example", "codeforum.example",
         "techpress.example", "opensourcehub.example", "learnpython.example", "readthedoc.example"]
NAV = ["Home", "Docs", "Blog", "Download", "Community", "About", "Contact", "Pricing", "Careers",
       "Support", "Log in", "Sign up", "News", "Events", "Tutorials", "API"]
RELATED = ["Getting started in 5 minutes", "Ten tips for faster code", "Release notes",
           "How we moved to the cloud", "Frequently asked questions", "Migration guide",
           "Security advisories", "Roadmap for next year", "Meet the maintainers",
           "Benchmarks explained", "Community guidelines", "Changelog archive"]
SCRIPTS = [
    "window.dataLayer = window.dataLayer || []; function gtag(){dataLayer.push(arguments);} "
    "gtag('js', new Date()); gtag('config', 'UA-000000-1');",
    "document.addEventListener('DOMContentLoaded', function () { var b = document.querySelector("
    "'.cookie'); if (localStorage.getItem('ok')) { b.remove(); } });",
]
STYLE = "body{font-family:sans-serif;margin:0} .nav a{padding:4px} .content p{line-height:1.5}"


def _e(text: str) -> str:
    return html.escape(text, quote=False)


def _links(rng: random.Random, items: list[str], k: int) -> str:
    return "".join(f'<li><a href="/{_slug(x)}">{_e(x)}</a></li>' for x in rng.sample(items, k))


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:60] or "page"


def render_blocks(blocks: list[Block], rng: random.Random) -> str:
    out = []
    for kind, text in blocks:
        if kind == "h":
            out.append(f"<h2>{_e(text)}</h2>")
        elif kind == "pre":
            out.append(f"<pre><code>{_e(text)}</code></pre>")
        elif kind == "li":
            out.append(f"<ul><li>{_e(text)}</li></ul>")
        elif kind == "a":  # a listing page's link: boilerplate, not in the ground truth
            out.append(f'<p><a href="/{_slug(text)}">{_e(text)}</a></p>')
        else:
            words = _e(text).split(" ")
            if len(words) > 12 and rng.random() < 0.3:  # an inline link or emphasis, as real pages have
                i = rng.randrange(len(words) - 2)
                tag = rng.choice(["em", "strong", "code"])
                words[i] = f"<{tag}>{words[i]}</{tag}>"
            out.append(f"<p>{' '.join(words)}</p>")
    return "\n".join(out)


def render_page(title: str, blocks: list[Block], site: str, skin: str, rng: random.Random,
                lang: str = "en") -> str:
    """A whole page in one of five site templates, with navigation, banners and footers."""
    body = render_blocks(blocks, rng)
    nav = _links(rng, NAV, rng.randrange(5, 10))
    related = _links(rng, RELATED, rng.randrange(3, 7))
    year = rng.randrange(2015, 2025)
    cookie = ('<div class="cookie-banner" id="cookie-consent">This website uses cookies to ensure '
              'you get the best experience on our website. <a href="/privacy">Learn more</a> '
              '<button>Got it!</button></div>') if rng.random() < 0.5 else ""
    head = (f'<!DOCTYPE html>\n<html lang="{lang}"><head><meta charset="utf-8">'
            f"<title>{_e(title)} | {site}</title><style>{STYLE}</style>"
            f"<script>{rng.choice(SCRIPTS)}</script></head>\n<body>\n")
    foot_text = (f"© {year} {site}. All rights reserved. "
                 f'<a href="/privacy">Privacy Policy</a> | <a href="/terms">Terms of Use</a>')
    if skin == "docs":
        page = (f'<header class="site-header"><div class="logo">{site}</div><nav class="nav"><ul>{nav}'
                f'</ul></nav></header>{cookie}\n<div class="wrapper"><aside class="sidebar"><h3>'
                f'On this page</h3><ul>{related}</ul></aside>\n<main><article><h1>{_e(title)}</h1>\n'
                f'{body}\n</article></main></div>\n<footer class="site-footer"><p>{foot_text}</p>'
                f"</footer>")
    elif skin == "blog":
        page = (f'<div id="header"><div class="menu"><ul>{nav}</ul></div></div>{cookie}\n'
                f'<div class="post"><h1 class="post-title">{_e(title)}</h1><div class="post-meta">'
                f"Posted by admin on {year}-0{rng.randrange(1, 10)}-1{rng.randrange(10)} · "
                f'{rng.randrange(2, 15)} min read</div>\n<div class="post-body">{body}</div>\n'
                f'<div class="share-buttons">Share this: <a href="#">Twitter</a> <a href="#">'
                f'Facebook</a> <a href="#">LinkedIn</a></div></div>\n<div class="related-posts">'
                f'<h3>Related posts</h3><ul>{related}</ul></div>\n<div class="comments"><h3>'
                f"Leave a comment</h3><form><textarea></textarea><button>Post</button></form></div>\n"
                f'<div id="footer">{foot_text}</div>')
    elif skin == "mirror":
        page = (f'<div class="banner">You are viewing a mirror of {site}. '
                f'<a href="/">Go to the original</a></div>\n<div class="top-nav"><ul>{nav}</ul></div>\n'
                f'<div class="project-description"><h1>{_e(title)}</h1>\n{body}</div>\n'
                f'<div class="sidebar-section"><h3>Navigation</h3><ul>{related}</ul><h3>Meta</h3>'
                f"<p>License: see project</p></div>\n<footer>{foot_text}</footer>")
    elif skin == "forum":
        page = (f'<table class="layout"><tr><td class="navbar"><ul>{nav}</ul></td></tr>\n'
                f'<tr><td><div class="breadcrumb"><a href="/">Forum</a> » <a href="/f/python">'
                f'Python</a> » {_e(title[:40])}</div>\n<div class="message"><h1>{_e(title)}</h1>\n'
                f'{body}</div>\n<div class="signature">-- Sent from my laptop</div></td></tr>\n'
                f'<tr><td class="copyright">{foot_text}</td></tr></table>{cookie}')
    else:  # plain: no semantic tags or telling class names, so only link density and later stages help
        plain_nav = " | ".join(f'<a href="/{_slug(x)}">{_e(x)}</a>' for x in rng.sample(NAV, 6))
        page = (f'<div id="d1">{plain_nav}</div>\n<div id="d2"><h1>{_e(title)}</h1>\n{body}</div>\n'
                f'<div id="d3"><p>© {year} {site}. All rights reserved.</p></div>')
    return head + page + "\n<script>console.log('loaded');</script>\n</body></html>\n"


def malform(page: str, rng: random.Random) -> str:
    """Break the markup the way real pages are broken: missing and stray closing tags."""
    for tag in ("</p>", "</div>", "</li>"):
        if rng.random() < 0.7:
            page = page.replace(tag, "", rng.randrange(1, 6))
    i = page.find("<body>") + 6
    return page[:i] + "</span><b>" + page[i:].replace("</h1>", "</h2>", 1)


# ---------------------------------------------------------------------------- the crawl


def _title(source: Source, blocks: list[Block], part: int) -> str:
    heads = [t for k, t in blocks if k == "h"]
    base = heads[0] if heads else source.name.split("/")[-1].replace("_", " ")
    return base[:80] + (f" (part {part + 1})" if part else "")


def source_pages(sources: list[Source], cfg: BuildConfig, rng: random.Random) -> list[dict]:
    """Each source cut into pages, capped per source and per domain (sources in random order)."""
    by_domain: dict[str, list[dict]] = {}
    order = list(sources)
    rng.shuffle(order)
    for src in order:
        pages = by_domain.setdefault(src.domain, [])
        if len(pages) >= cfg.max_pages[src.domain]:
            continue
        chars = cfg.page_chars if src.lang == "en" else cfg.page_chars // 3
        for part, blocks in enumerate(paginate(to_blocks(src.text), chars,
                                               cfg.pages_per_source[src.domain])):
            if sum(len(t) for _, t in blocks) < 200 or len(pages) >= cfg.max_pages[src.domain]:
                continue
            pages.append({"source": src.name, "domain": src.domain, "lang": src.lang,
                          "quality": "good", "blocks": blocks,
                          "title": _title(src, blocks, part)})
    return [p for d in sorted(by_domain) for p in by_domain[d]]


def build(cfg: BuildConfig | None = None, sources: list[Source] | None = None) -> list[Doc]:
    """The crawl as documents: ``text`` is the page's HTML, ``meta`` its URL and labels."""
    cfg = cfg or BuildConfig()
    rng = random.Random(cfg.seed)
    if sources is None:
        site_packages = Path(sysconfig.get_paths()["purelib"])
        sources = (docs_sources() + readme_sources() + license_sources()
                   + i18n_sources(site_packages, LANGUAGES))
    pages = source_pages(sources, cfg, rng)
    english = [p for p in pages if p["lang"] == "en" and p["domain"] != "license"]
    titles = [p["title"] for p in english]
    for i in range(cfg.spam):
        pages.append({"source": f"spam/{i}", "domain": "spam", "lang": "en", "quality": "spam",
                      "blocks": spam_blocks(rng), "title": rng.choice(SPAM_TOPICS).title()})
    for i in range(cfg.spun):
        src = rng.choice(english)
        pages.append({"source": f"spun/{i}", "domain": "spam", "lang": "en", "quality": "spun",
                      "blocks": spun_blocks(src["blocks"], rng), "title": src["title"]})
    for i in range(cfg.seo):
        pages.append({"source": f"seo/{i}", "domain": "spam", "lang": "en", "quality": "seo",
                      "blocks": seo_blocks(rng), "title": "Buying guide"})
    for i in range(cfg.listing):
        pages.append({"source": f"listing/{i}", "domain": "spam", "lang": "en",
                      "quality": "listing", "blocks": listing_blocks(titles, rng),
                      "title": "Archive"})
    for p in pages:  # personal data: natural addresses replaced and labelled, some injected
        p["pii"], p["decoys"] = [], []
        if p["quality"] != "good":
            continue
        blocks = []
        for kind, text in p["blocks"]:
            text, found = scrub_natural_pii(text, rng)
            blocks.append((kind, text))
            p["pii"] += found
        if rng.random() < cfg.pii_fraction:
            block, found = pii_block(rng)
            blocks.insert(rng.randrange(1, len(blocks) + 1), block)
            p["pii"] += found
        if rng.random() < cfg.decoy_fraction:
            block, decoys = decoy_block(rng)
            blocks.insert(rng.randrange(1, len(blocks) + 1), block)
            p["decoys"] += decoys
        p["blocks"] = blocks
    rng.shuffle(pages)
    for p in pages:
        p["site"], p["skin"] = rng.choice(SITES), rng.choice(["docs", "blog", "mirror", "forum", "plain"])
        p["url"] = f"https://{p['site']}/{_slug(p['source'])}/{_slug(p['title'])}"
    # copies go after their original, at a random later position
    good = [i for i, p in enumerate(pages) if p["quality"] == "good"]
    copies: list[tuple[int, dict]] = []
    english_good = [i for i in good if pages[i]["lang"] == "en"]
    for kind, n in (("mirror", cfg.mirrors), ("recrawl", cfg.recrawls), ("near", cfg.near_dups),
                    ("paraphrase", cfg.paraphrases)):
        for i in rng.sample(english_good if kind == "paraphrase" else good, n):
            orig = pages[i]
            copy = dict(orig, copy_kind=kind, orig_index=i, orig_ref=orig)
            if kind in ("near", "paraphrase"):
                copy["blocks"] = (near_duplicate if kind == "near" else paraphrase)(orig["blocks"], rng)
                copy["pii"] = [x for x in orig["pii"] if any(x[1] in t for _, t in copy["blocks"])]
                copy["decoys"] = [x for x in orig["decoys"] if any(x in t for _, t in copy["blocks"])]
            if kind != "recrawl":
                copy["site"] = rng.choice([s for s in SITES if s != orig["site"]])
                copy["skin"] = rng.choice(["docs", "blog", "mirror", "forum", "plain"])
                copy["url"] = f"https://{copy['site']}/{_slug(orig['source'])}/{_slug(orig['title'])}"
            copies.append((rng.randrange(i + 1, len(pages) + 1), copy))
    slots: dict[int, list[dict]] = {}
    for pos, copy in copies:
        slots.setdefault(pos, []).append(copy)
    ordered: list[dict] = []
    index_of: dict[int, int] = {}
    for i in range(len(pages) + 1):
        for copy in slots.get(i, []):
            copy["orig_pos"] = index_of[copy.pop("orig_index")]
            ordered.append(copy)
        if i < len(pages):
            index_of[i] = len(ordered)
            ordered.append(pages[i])
    splits = {}
    docs = []
    for pos, p in enumerate(ordered):
        pid = f"p{pos:05d}"
        kind = p.get("copy_kind")
        html_text = p["orig_ref"]["html"] if kind == "recrawl" else render_page(
            p["title"], p["blocks"], p["site"], p["skin"], rng, p["lang"])
        if kind is None and rng.random() < cfg.malformed_fraction:
            html_text = malform(html_text, rng)
        p["html"] = html_text
        if p["source"] not in splits:
            splits[p["source"]] = "val" if rng.random() < cfg.val_fraction else "train"
        main = main_text([("h", p["title"])] + [b for b in p["blocks"] if b[0] != "a"])
        meta = {"url": p["url"], "lang": p["lang"], "domain": p["domain"], "quality": p["quality"],
                "main": main, "pii": p["pii"], "decoys": p["decoys"], "source": p["source"],
                "split": splits[p["source"]], "dup_of": None, "near_dup_of": None,
                "paraphrase_of": None, "malformed": "</span><b>" in html_text[:2000]}
        if kind in ("mirror", "recrawl"):
            meta["dup_of"] = f"p{p['orig_pos']:05d}"
        elif kind == "near":
            meta["near_dup_of"] = f"p{p['orig_pos']:05d}"
        elif kind == "paraphrase":
            meta["paraphrase_of"] = f"p{p['orig_pos']:05d}"
        docs.append(Doc(pid, html_text, meta))
    return docs


def manifest(docs: list[Doc], path: Path) -> dict:
    """Sizes, label counts, the file's sha256 and what the crawl was built from."""
    from importlib.metadata import version

    counts = {k: dict(sorted(Counter(str(d.meta[k]) for d in docs).items()))
              for k in ("domain", "lang", "quality", "split")}
    return {
        "pages": len(docs),
        "html_bytes": sum(len(d.text.encode()) for d in docs),
        "main_chars": sum(len(d.meta["main"]) for d in docs),
        "counts": counts,
        "exact_duplicates": sum(d.meta["dup_of"] is not None for d in docs),
        "near_duplicates": sum(d.meta["near_dup_of"] is not None for d in docs),
        "paraphrases": sum(d.meta["paraphrase_of"] is not None for d in docs),
        "pages_with_pii": sum(bool(d.meta["pii"]) for d in docs),
        "pii_values": sum(len(d.meta["pii"]) for d in docs),
        "malformed": sum(d.meta["malformed"] for d in docs),
        "file": path.name,
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "built_with": {"python": sys.version.split()[0], "sphinx": version("sphinx"),
                       "distributions": len(list(__import__("importlib.metadata").metadata
                                                 .distributions()))},
        "command": "python -m llmlab.curate.crawl_build --out llmlab/curate/assets/crawl.jsonl.gz",
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=Path(__file__).with_name("assets") / "crawl.jsonl.gz")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    docs = build(BuildConfig(seed=args.seed))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_docs(args.out, docs, gzip_level=9)
    info = manifest(docs, args.out)
    args.out.with_name("crawl.json").write_text(json.dumps(info, indent=2, ensure_ascii=False) + "\n")
    print(json.dumps({k: info[k] for k in ("pages", "html_bytes", "counts", "sha256")}, indent=1))


if __name__ == "__main__":
    main()
