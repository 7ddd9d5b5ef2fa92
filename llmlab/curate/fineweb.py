"""The FineWeb rules: three line-level heuristics that the Gopher and C4 rules miss.

Penedo et al., "The FineWeb Datasets: Decanting the Web for the Finest Text Data at Scale",
arXiv:2406.17557, section 3.3: chosen by comparing the statistics of kept and removed data and
ablated by training models — drop a page when fewer than 12 % of its lines end in terminal
punctuation, when more than 67 % of its lines are short (≤ 30 characters), when more than 1 % of
its characters sit in lines that repeat earlier lines, or when it has more than 0.3 newlines
per word (a list). Same reasons and verdicts as datatrove's ``FineWebQualityFilter``
(tests/curate/test_parity_filters.py). Taught in chapter 10 (solutions/10_data).
"""

from __future__ import annotations

from dataclasses import dataclass

from llmlab.curate.gopher import duplicates
from llmlab.curate.text import TERMINAL_PUNCTUATION, split_words
from llmlab.utils import reject_unknown_keys


@reject_unknown_keys
@dataclass
class FineWebConfig:
    """FineWeb's thresholds."""

    line_punct_thr: float = 0.12
    line_punct_exclude_zero: bool = False
    short_line_thr: float = 0.67
    short_line_length: int = 30
    char_duplicates_ratio: float = 0.01
    new_line_ratio: float = 0.3
    stop_chars: tuple[str, ...] = TERMINAL_PUNCTUATION


def fineweb_filter(text: str, cfg: FineWebConfig | None = None) -> str | None:
    """The first FineWeb rule ``text`` fails, or ``None``."""
    cfg = cfg or FineWebConfig()
    lines = [line for line in text.split("\n") if line.strip() != ""]
    if not lines:
        return "empty"
    ratio = sum(line.endswith(cfg.stop_chars) for line in lines) / len(lines)
    if ratio < cfg.line_punct_thr and not (ratio == 0 and cfg.line_punct_exclude_zero):
        return "line_punct_ratio"
    if sum(len(line) <= cfg.short_line_length for line in lines) / len(lines) > cfg.short_line_thr:
        return "short_line_ratio"
    if duplicates(lines)[1] / len(text.replace("\n", "")) > cfg.char_duplicates_ratio:
        return "char_dup_ratio"
    if text.count("\n") / len(split_words(text)) > cfg.new_line_ratio:
        return "list_ratio"
    return None
