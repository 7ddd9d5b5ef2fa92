"""Shared texts and a small trained tokenizer for the tokenizer tests (real text, offline)."""

from __future__ import annotations

import pytest

from llmlab.tokenizer import GPT2_PATTERN, GPT4_PATTERN, Tokenizer, train_bpe
from llmlab.tokenizer.samples import chinese_text, python_docstrings, python_source

EOT = "<|endoftext|>"

#: hard cases every encoder must agree on
DIVERSE = [
    "Hello, world! It's 2024 and we're testing: don't stop.",
    "Tokenization matters — “quotes”, naïve café, Ünïcödé.",
    "分词是大语言模型处理文本的第一步。中文文本给分词器带来了特别的挑战！",
    "emoji 👍🏽 family 👨‍👩‍👧 flags 🇨🇳🇺🇸 and 😀😀😀",
    "def f(x):\n    return x ** 2  # square\n\n\n\tif x:\n\t\tpass\n",
    "numbers 1234567890 3.14159 -42 1e-9 0x1F 100,000,000",
    "   leading spaces, trailing spaces   \n\n\n   \r\n\r\n  mixed\twhite\t \t space   ",
    f"special {EOT} tokens{EOT}{EOT} adjacent<|endoftext|",
    "",
    " ",
    "a",
    "\x00\x01 control \x7f chars \u200b zero width",
]


@pytest.fixture(scope="session")
def english() -> str:
    return python_docstrings(60_000)


@pytest.fixture(scope="session")
def code() -> str:
    return python_source(60_000)


@pytest.fixture(scope="session")
def chinese() -> str:
    return chinese_text()


@pytest.fixture(scope="session")
def corpus(english: str, code: str, chinese: str) -> list[str]:
    return [english, code, chinese]


@pytest.fixture(scope="session", params=["gpt2", "gpt4"])
def trained(request, corpus: list[str]) -> Tokenizer:
    """A 1,000-token BPE trained on English, code and Chinese, with one special token."""
    pattern = {"gpt2": GPT2_PATTERN, "gpt4": GPT4_PATTERN}[request.param]
    vocab, merges = train_bpe(corpus, 1000, [EOT], pattern=pattern)
    return Tokenizer(vocab, merges, [EOT], pattern=pattern)
