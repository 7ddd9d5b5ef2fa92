"""Tokenization: byte-level BPE, WordPiece, Unigram, BPE-dropout, chat templates, metrics.

Taught in chapter 01 (solutions/01_tokenization). The public API:

- ``train_bpe(input, vocab_size, special_tokens, pattern) -> (vocab, merges)`` and
  ``Tokenizer(vocab, merges, special_tokens, pattern)`` with ``encode``, ``decode``,
  ``encode_iterable``, ``save``, ``Tokenizer.load``; ``GPT2_PATTERN``, ``GPT4_PATTERN``.
- interop: ``to_tiktoken``/``from_tiktoken``, ``to_hf``/``from_hf``, ``load_gpt2_files``/
  ``save_gpt2_files``, ``to_sentencepiece``/``from_sentencepiece``.
- ``WordPiece``/``train_wordpiece``, ``Unigram``/``train_unigram``, ``encode_with_dropout``,
  ``apply_chat_template`` (ChatML), ``render_chat_template`` (a checkpoint's Jinja
  template), and the metrics ``bytes_per_token``, ``fertility``,
  ``vocab_utilization``.
"""

from llmlab.tokenizer.bpe import Tokenizer
from llmlab.tokenizer.bpe_train import train_bpe
from llmlab.tokenizer.chat import (
    CHATML_SPECIAL_TOKENS,
    ChatEncoding,
    apply_chat_template,
    render_chat_template,
)
from llmlab.tokenizer.dropout import encode_with_dropout
from llmlab.tokenizer.interop import (
    from_hf,
    from_tiktoken,
    load_gpt2_files,
    save_gpt2_files,
    to_hf,
    to_tiktoken,
)
from llmlab.tokenizer.metrics import bytes_per_token, fertility, vocab_utilization
from llmlab.tokenizer.pretokenize import GPT2_PATTERN, GPT4_PATTERN
from llmlab.tokenizer.sentencepiece_io import from_sentencepiece, to_sentencepiece
from llmlab.tokenizer.unigram import Unigram, train_unigram
from llmlab.tokenizer.wordpiece import WordPiece, train_wordpiece

__all__ = [
    "CHATML_SPECIAL_TOKENS",
    "GPT2_PATTERN",
    "GPT4_PATTERN",
    "ChatEncoding",
    "Tokenizer",
    "Unigram",
    "WordPiece",
    "apply_chat_template",
    "bytes_per_token",
    "encode_with_dropout",
    "fertility",
    "from_hf",
    "from_sentencepiece",
    "from_tiktoken",
    "load_gpt2_files",
    "render_chat_template",
    "save_gpt2_files",
    "to_hf",
    "to_sentencepiece",
    "to_tiktoken",
    "train_bpe",
    "train_unigram",
    "train_wordpiece",
    "vocab_utilization",
]
