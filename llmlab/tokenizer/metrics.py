"""How well a tokenizer fits a text: bytes per token, fertility and vocabulary utilization.

Bytes per token is compression (higher: more text per context window, fewer tokens to pay
for). Fertility is tokens per word (Rust et al. 2021, "How Good is Your Tokenizer?",
arXiv:2012.15613); for text without spaces between words (Chinese) it is counted per character.
Utilization is the fraction of the vocabulary a text uses at all.
Taught in chapter 01 (solutions/01_tokenization).
"""

from __future__ import annotations

from collections.abc import Callable

import regex

Encode = Callable[[str], list[int]]
_WORD = regex.compile(r"\p{Han}|[\p{L}\p{N}]+")  # a Han character counts as one word


def bytes_per_token(encode: Encode, text: str) -> float:
    """UTF-8 bytes of ``text`` divided by its number of tokens."""
    n = len(encode(text))
    return len(text.encode("utf-8")) / n if n else 0.0


def fertility(encode: Encode, text: str) -> float:
    """Tokens per word (runs of letters/digits; each Han character is a word)."""
    words = _WORD.findall(text)
    return len(encode(text)) / len(words) if words else 0.0


def vocab_utilization(encode: Encode, text: str, vocab_size: int) -> float:
    """Fraction of the ``vocab_size`` ids that occur in the encoding of ``text``."""
    return len(set(encode(text))) / vocab_size
