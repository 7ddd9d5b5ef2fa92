"""Words, sentences and punctuation: the text units every rule filter counts in.

The Gopher, C4 and FineWeb rules count words, sentences, punctuation and lines, so their verdicts
depend on how text is cut into those units. llmlab cuts with two regular expressions: a **word**
is a whitespace-separated token with the punctuation at its edges split off, one token per mark
(spaCy's prefix and suffix rules, without its exceptions); a **sentence** ends at ``.``, ``!``,
``?`` or a CJK full stop followed by space (or the end).
Production pipelines use a language's tokenizer (datatrove: spaCy's for English, which needs no
download, and others that do); a rule's thresholds were tuned with the tokenizer its authors
used, so the same rule with another tokenizer keeps a slightly different set of pages. The
parity tests give datatrove's filters *this* splitter (datatrove accepts any ``WordTokenizer``),
so they compare the rules themselves.

``TERMINAL_PUNCTUATION`` and ``PUNCTUATION`` are datatrove's sets (the Unicode
Sentence_Terminal characters, and common punctuation and control characters), so a line "ends
in punctuation" for llmlab exactly when it does for datatrove. Taught in chapter 10
(solutions/10_data).
"""

from __future__ import annotations

import re

import regex

TERMINAL_PUNCTUATION_CHARS = (
    "!.?\u0589\u061d\u061e\u061f\u06d4\u0700\u0701\u0702\u07f9\u0837\u0839\u083d\u083e\u0964"
    "\u0965\u104a\u104b\u1362\u1367\u1368\u166e\u1735\u1736\u17d4\u17d5\u17d6\u17d9\u17da\u1803"
    "\u1809\u1944\u1945\u1aa8\u1aa9\u1aaa\u1aab\u1b5a\u1b5b\u1b5e\u1b5f\u1b7d\u1b7e\u1c3b\u1c3c"
    "\u1c7e\u1c7f\u203c\u203d\u2047\u2048\u2049\u2e2e\u2e3c\u2e53\u2e54\u3002\ua4ff\ua60e\ua60f"
    "\ua6f3\ua6f7\ua876\ua877\ua8ce\ua8cf\ua92f\ua9c8\ua9c9\uaa5d\uaa5e\uaa5f\uaaf0\uaaf1\uabeb"
    "\ufe52\ufe56\ufe57\uff01\uff0e\uff1f\uff61\U00010a56\U00010a57\U00010f55\U00010f56"
    "\U00010f57\U00010f58\U00010f59\U00010f86\U00010f87\U00010f88\U00010f89\U00011047\U00011048"
    "\U000110be\U000110bf\U000110c0\U000110c1\U00011141\U00011142\U00011143\U000111c5\U000111c6"
    "\U000111cd\U000111de\U000111df\U00011238\U00011239\U0001123b\U0001123c\U000112a9\U0001144b"
    "\U0001144c\U000115c2\U000115c3\U000115c9\U000115ca\U000115cb\U000115cc\U000115cd\U000115ce"
    "\U000115cf\U000115d0\U000115d1\U000115d2\U000115d3\U000115d4\U000115d5\U000115d6\U000115d7"
    "\U00011641\U00011642\U0001173c\U0001173d\U0001173e\U00011944\U00011946\U00011a42\U00011a43"
    "\U00011a9b\U00011a9c\U00011c41\U00011c42\U00011ef7\U00011ef8\U00011f43\U00011f44\U00016a6e"
    "\U00016a6f\U00016af5\U00016b37\U00016b38\U00016b44\U00016e98\U0001bc9f\U0001da88"
)
PUNCTUATION_CHARS = (
    "!/\u2014\u201d:\uff05\uff11\u3008&(\u3001\u2501\x5c\u3010#%\u300c\u300d\uff0c\u3011\uff1b+"
    "^]~\u201c\u300a\u201e';\u2019{|\u2236\xb4[=-`*\uff0e\uff08\u2013\uff1f\uff01\uff1a$\uff5e"
    "\xab\u3009,><\u300b)?\uff09\u3002\u2026@_.\x22}\u25ba\xbb\x00\x01\x02\x03\x04\x05\x06\x07"
    "\x08\x0b\x0c\x0d\x0e\x0f\x10\x11\x12\x13\x14\x15\x16\x17\x18\x19\x1a\x1b\x1c\x1d\x1e\x1f"
    "\x7f\x80\x81\x82\x83\x84\x85\x86\x87\x88\x89\x8a\x8b\x8c\x8d\x8e\x8f\x90\x91\x92\x93\x94"
    "\x95\x96\x97\x98\x99\x9a\x9b\x9c\x9d\x9e\x9f"
)
TERMINAL_PUNCTUATION: tuple[str, ...] = tuple(TERMINAL_PUNCTUATION_CHARS)
PUNCTUATION_SET = frozenset(PUNCTUATION_CHARS) | frozenset(TERMINAL_PUNCTUATION_CHARS)

_EDGE = regex.compile(r"^([^\w\s]*)(.*?)([^\w\s]*)$", regex.DOTALL)
SENTENCE_END = re.compile(r"[.!?。！？]+[\"')\]’”」』]*(?=\s|$)")


def split_words(text: str) -> list[str]:
    """Whitespace-separated tokens with the punctuation at their edges split off, one token per
    mark (as spaCy's prefix and suffix rules do): ``"(Don't stop...)"`` -> ``["(", "Don't",
    "stop", ".", ".", ".", ")"]``; a URL or ``3.5`` stays one token."""
    out: list[str] = []
    for token in text.split():
        lead, core, trail = _EDGE.match(token).groups()
        out += list(lead)
        if core:
            out.append(core)
        out += list(trail)
    return out


def sentence_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) of each sentence: a sentence ends after terminal punctuation followed by
    whitespace or the end of the text; what follows the last one is a sentence too."""
    spans, start = [], 0
    for m in SENTENCE_END.finditer(text):
        end = m.end()
        if text[start:end].strip():
            spans.append((start + len(text[start:end]) - len(text[start:end].lstrip()), end))
        start = end
    if text[start:].strip():
        spans.append((start + len(text[start:]) - len(text[start:].lstrip()), len(text.rstrip())))
    return spans


def split_sentences(text: str) -> list[str]:
    """The sentences of ``text`` (see :func:`sentence_spans`), stripped."""
    return [text[a:b].strip() for a, b in sentence_spans(text)]
