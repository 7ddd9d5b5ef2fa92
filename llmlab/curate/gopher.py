"""The Gopher rules: drop documents whose statistics are unlike human prose, or that repeat.

Rae et al., "Scaling Language Models: Methods, Analysis & Insights from Training Gopher",
arXiv:2112.11446, appendix A.1.1 (MassiveText quality and repetition filters), with the
thresholds of its Table A1. The same rules run in datatrove (``GopherQualityFilter``,
``GopherRepetitionFilter``), FineWeb and RefinedWeb; llmlab's verdicts equal datatrove's on the
same documents with the same word splitter (tests/curate/test_parity_filters.py).

Each filter returns the name of the first rule a document fails (datatrove's reason strings),
or ``None`` to keep it. Taught in chapter 10 (solutions/10_data).
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

from llmlab.curate.text import PUNCTUATION_SET, split_words
from llmlab.utils import reject_unknown_keys

STOP_WORDS = ("the", "be", "to", "of", "and", "that", "have", "with")


@reject_unknown_keys
@dataclass
class GopherQualityConfig:
    """Gopher's quality thresholds (Table A1); ``None`` turns a rule off."""

    min_doc_words: int | None = 50
    max_doc_words: int | None = 100_000
    min_avg_word_length: float | None = 3
    max_avg_word_length: float | None = 10
    max_symbol_word_ratio: float | None = 0.1
    max_bullet_lines_ratio: float | None = 0.9
    max_ellipsis_lines_ratio: float | None = 0.3
    min_alpha_words_ratio: float | None = 0.8
    min_stop_words: int | None = 2
    stop_words: tuple[str, ...] = STOP_WORDS


def gopher_quality(text: str, cfg: GopherQualityConfig | None = None) -> str | None:
    """The first quality rule ``text`` fails, or ``None``.

    Words are counted without pure-punctuation tokens; the ratios (``#`` and ellipses per word,
    alphabetic words) divide by all tokens, as in the reference implementation.
    """
    cfg = cfg or GopherQualityConfig()
    words = split_words(text)
    n_words = len(words)
    content = [w for w in words if any(ch not in PUNCTUATION_SET for ch in w)]
    if cfg.min_doc_words and len(content) < cfg.min_doc_words:
        return "gopher_short_doc"
    if cfg.max_doc_words and len(content) > cfg.max_doc_words:
        return "gopher_long_doc"
    mean_len = sum(map(len, content)) / len(content) if content else float("nan")
    if cfg.min_avg_word_length and mean_len < cfg.min_avg_word_length:
        return "gopher_below_avg_threshold"
    if cfg.max_avg_word_length and mean_len > cfg.max_avg_word_length:
        return "gopher_above_avg_threshold"
    if cfg.max_symbol_word_ratio and text.count("#") / n_words > cfg.max_symbol_word_ratio:
        return "gopher_too_many_hashes"
    if cfg.max_symbol_word_ratio and \
            (text.count("...") + text.count("…")) / n_words > cfg.max_symbol_word_ratio:
        return "gopher_too_many_ellipsis"
    lines = text.splitlines()
    if cfg.max_bullet_lines_ratio and sum(
            s.lstrip().startswith(("•", "-")) for s in lines) / len(lines) > cfg.max_bullet_lines_ratio:
        return "gopher_too_many_bullets"
    if cfg.max_ellipsis_lines_ratio and sum(
            s.rstrip().endswith(("...", "…")) for s in lines) / len(lines) > cfg.max_ellipsis_lines_ratio:
        return "gopher_too_many_end_ellipsis"
    if cfg.min_alpha_words_ratio and \
            sum(any(c.isalpha() for c in w) for w in words) / n_words < cfg.min_alpha_words_ratio:
        return "gopher_below_alpha_threshold"
    if cfg.min_stop_words and len(set(cfg.stop_words) & set(words)) < cfg.min_stop_words:
        return "gopher_enough_stop_words"
    return None


@reject_unknown_keys
@dataclass
class GopherRepetitionConfig:
    """Gopher's repetition thresholds (Table A1): fractions of lines, paragraphs and characters."""

    dup_line_frac: float | None = 0.3
    dup_para_frac: float | None = 0.3
    dup_line_char_frac: float | None = 0.2
    dup_para_char_frac: float | None = 0.2
    top_n_grams: tuple[tuple[int, float], ...] = ((2, 0.2), (3, 0.18), (4, 0.16))
    dup_n_grams: tuple[tuple[int, float], ...] = ((5, 0.15), (6, 0.14), (7, 0.13), (8, 0.12),
                                                  (9, 0.11), (10, 0.10))


def duplicates(items: list[str]) -> tuple[int, int]:
    """(how many items repeat an earlier one, how many characters those repeats hold)."""
    seen: set[str] = set()
    n = chars = 0
    for x in items:
        if x in seen:
            n, chars = n + 1, chars + len(x)
        else:
            seen.add(x)
    return n, chars


def top_ngram_chars(words: list[str], n: int) -> int:
    """Characters covered by the most frequent word n-gram: its length times its count."""
    grams = Counter(" ".join(words[i:i + n]) for i in range(len(words) - n + 1))
    gram, count = grams.most_common(1)[0]
    return len(gram) * count


def duplicate_ngram_chars(words: list[str], n: int) -> int:
    """Characters in n-grams that repeat an earlier n-gram (a repeat skips its n words)."""
    seen: set[str] = set()
    chars = i = 0
    while i < len(words) - n + 1:
        gram = "".join(words[i:i + n])
        if gram in seen:
            chars += len(gram)
            i += n
        else:
            seen.add(gram)
            i += 1
    return chars


PARAGRAPH = re.compile(r"\n{2,}")
LINES = re.compile(r"\n+")


def gopher_repetition(text: str, cfg: GopherRepetitionConfig | None = None) -> str | None:
    """The first repetition rule ``text`` fails, or ``None``."""
    cfg = cfg or GopherRepetitionConfig()
    if not text:
        return "empty"
    paragraphs = PARAGRAPH.split(text.strip())
    n, chars = duplicates(paragraphs)
    if cfg.dup_para_frac and n / len(paragraphs) > cfg.dup_para_frac:
        return "dup_para_frac"
    if cfg.dup_para_char_frac and chars / len(text) > cfg.dup_para_char_frac:
        return "dup_para_char_frac"
    lines = LINES.split(text)
    n, chars = duplicates(lines)
    if cfg.dup_line_frac and n / len(lines) > cfg.dup_line_frac:
        return "dup_line_frac"
    if cfg.dup_line_char_frac and chars / len(text) > cfg.dup_line_char_frac:
        return "dup_line_char_frac"
    words = split_words(text)
    for n, frac in cfg.top_n_grams:
        if len(words) >= n and top_ngram_chars(words, n) / len(text) > frac:
            return f"top_{n}_gram"
    for n, frac in cfg.dup_n_grams:
        if duplicate_ngram_chars(words, n) / len(text) > frac:
            return f"duplicated_{n}_n_grams"
    return None
