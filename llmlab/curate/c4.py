"""The C4 rules: keep lines that read like sentences, drop pages with code or boilerplate.

Raffel et al., "Exploring the Limits of Transfer Learning with a Unified Text-to-Text
Transformer", arXiv:1910.10683, section 2.2 (the Colossal Clean Crawled Corpus): keep only lines
that end in terminal punctuation and have at least 3 words; drop lines that mention JavaScript
or cookie and terms-of-use notices; drop pages with fewer than 5 sentences, with "lorem ipsum",
or with a curly bracket (code). The line rules run before the page rules, as in the reference
(TensorFlow Datasets' ``c4_utils``) and datatrove's ``C4QualityFilter``, whose verdicts and kept
text llmlab's equal on the same documents (tests/curate/test_parity_filters.py). The bad-words
list is left out (it needs a download). Taught in chapter 10 (solutions/10_data).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from llmlab.curate.text import split_sentences
from llmlab.utils import reject_unknown_keys

CITATION = re.compile(r"\[\d*]|\[edit]|\[citation needed]")
END_PUNCTUATION = (".", "?", "!", '"', "'")
POLICY = ("terms of use", "privacy policy", "cookie policy", "uses cookies", "use of cookies",
          "use cookies")


@reject_unknown_keys
@dataclass
class C4Config:
    """C4's rules (each can be turned off)."""

    remove_citations: bool = True
    filter_no_terminal_punct: bool = True
    min_num_sentences: int = 5  # -1 turns it off
    min_words_per_line: int = 3  # -1 turns it off
    max_word_length: int = 1000  # -1 turns it off
    filter_lorem_ipsum: bool = True
    filter_javascript: bool = True
    filter_curly_bracket: bool = True
    filter_policy: bool = True


def c4_filter(text: str, cfg: C4Config | None = None) -> tuple[str | None, str | None]:
    """``(kept text, None)`` for a page C4 keeps (its good lines, stripped, one per line), or
    ``(None, reason)`` for one it drops."""
    cfg = cfg or C4Config()
    sentences = 0
    kept = []
    for line in text.splitlines():
        line = line.strip()
        words = line.split()
        if cfg.max_word_length != -1 and any(len(w) > cfg.max_word_length for w in words):
            continue
        if cfg.remove_citations:
            line = CITATION.sub("", line)
        if cfg.filter_no_terminal_punct and (not line.endswith(END_PUNCTUATION) or line.endswith("...")):
            continue
        if len(words) < cfg.min_words_per_line:
            continue
        lower = line.lower()
        if cfg.filter_lorem_ipsum and "lorem ipsum" in lower:
            return None, "lorem_ipsum"
        if cfg.filter_javascript and "javascript" in lower:
            continue
        if cfg.filter_curly_bracket and "{" in line:
            return None, "curly_bracket"
        if cfg.filter_policy and any(p in lower for p in POLICY):
            continue
        if cfg.min_num_sentences != -1:
            sentences += max(1, len(split_sentences(line)))
        kept.append(line)
    if sentences < cfg.min_num_sentences:
        return None, "too_few_sentences"
    return "\n".join(kept).strip(), None
