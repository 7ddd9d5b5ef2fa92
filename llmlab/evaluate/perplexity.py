"""Perplexity and bits per byte of whole documents, longer than the context window.

A document of any length is cut into windows the model can read (lm-eval's
``get_rolling_token_windows`` + ``make_disjoint_window``): every token is predicted exactly once,
the first from a prefix token, each window conditioned on up to ``max_seq_len`` earlier tokens.
``context_len`` is how many tokens of the previous window a new one keeps: 1 (lm-eval's default,
disjoint windows: cheap, the first tokens of each window see little) up to ``max_seq_len``
(a sliding window moving one token at a time: each token sees the most context, one forward per
token). A stride ``s`` in Hugging Face's perplexity guide is ``context_len = max_seq_len - s + 1``.

Per-token perplexity depends on the tokenizer (a tokenizer with longer tokens has fewer, harder
predictions), so models with different tokenizers compare by **bits per byte**,
``-log2 p(document) / bytes``, or byte/word perplexity (as in the Pile, Gao et al.,
arXiv:2101.00027, and lm-eval's ``bits_per_byte``, ``byte_perplexity``, ``word_perplexity``).
Taught in chapter 11 (solutions/11_eval).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import torch

from llmlab.evaluate.likelihood import model_max_length, prefix_token_id, score_tokens


def rolling_windows(tokens: Sequence[int], prefix_id: int, max_seq_len: int,
                    context_len: int = 1) -> Iterator[tuple[list[int], list[int]]]:
    """(context ids, predicted ids) windows covering ``tokens``, each token predicted once.

    Every window's context + predicted fits in ``max_seq_len + 1`` ids (the model reads all but
    the last). ``1 <= context_len <= max_seq_len``.
    """
    if not 1 <= context_len <= max_seq_len:
        raise ValueError(f"need 1 <= context_len <= max_seq_len, got {context_len}, {max_seq_len}")
    tokens = list(tokens)
    if not tokens:
        return
    pred_len = max_seq_len - context_len + 1
    first = min(max_seq_len, len(tokens))
    yield [prefix_id], tokens[:first]
    predicted = first
    while predicted < len(tokens):
        n = min(len(tokens) - predicted, pred_len)
        end = predicted + n
        window = tokens[end - max_seq_len - 1:end - 1]  # the model's input for this window
        yield window[:len(window) - (n - 1)], tokens[end - n:end]
        predicted = end


@dataclass(frozen=True)
class LikelihoodStats:
    """Summed log-likelihood (nats) of some text and its size in tokens, bytes and words."""

    logprob: float
    n_tokens: int
    n_bytes: int
    n_words: int

    def __add__(self, other: LikelihoodStats) -> LikelihoodStats:
        return LikelihoodStats(self.logprob + other.logprob, self.n_tokens + other.n_tokens,
                               self.n_bytes + other.n_bytes, self.n_words + other.n_words)

    @property
    def token_perplexity(self) -> float:
        return math.exp(-self.logprob / self.n_tokens)

    @property
    def byte_perplexity(self) -> float:
        return math.exp(-self.logprob / self.n_bytes)

    @property
    def word_perplexity(self) -> float:
        return math.exp(-self.logprob / self.n_words)

    @property
    def bits_per_byte(self) -> float:
        return -self.logprob / self.n_bytes / math.log(2)


def count_words(text: str) -> int:
    """Words as lm-eval counts them for ``word_perplexity``: pieces between whitespace runs."""
    return len(re.split(r"\s+", text))


def document_likelihood(model: torch.nn.Module, tokenizer, text: str, context_len: int = 1,
                        max_length: int | None = None, batch_size: int = 8,
                        prefix_id: int | None = None) -> LikelihoodStats:
    """log p(text) through rolling windows, with the text's size (lm-eval's
    ``loglikelihood_rolling`` for one document)."""
    if not text:
        raise ValueError("cannot score an empty document")
    max_length = max_length or model_max_length(model)
    prefix_id = prefix_token_id(tokenizer) if prefix_id is None else prefix_id
    tokens = tokenizer.encode(text)
    windows = list(rolling_windows(tokens, prefix_id, max_length, context_len))
    scores = score_tokens(model, windows, batch_size, max_length)
    return LikelihoodStats(sum(s.logprob for s in scores), len(tokens), len(text.encode("utf-8")),
                           count_words(text))


def corpus_likelihood(model: torch.nn.Module, tokenizer, texts: Sequence[str],
                      context_len: int = 1, progress: Callable | None = None,
                      **kwargs) -> LikelihoodStats:
    """Documents summed: perplexities of the total (lm-eval's ``weighted_perplexity``), not a
    mean of per-document perplexities."""
    if not texts:
        raise ValueError("no documents to score")
    stats = [document_likelihood(model, tokenizer, t, context_len, **kwargs)
             for t in (progress(texts) if progress else texts)]
    return sum(stats[1:], stats[0])


def domain_likelihood(model: torch.nn.Module, tokenizer, domains: Mapping[str, Sequence[str]],
                      context_len: int = 1, **kwargs) -> dict[str, LikelihoodStats]:
    """:func:`corpus_likelihood` per domain (code, prose, another language, ...)."""
    return {name: corpus_likelihood(model, tokenizer, texts, context_len, **kwargs)
            for name, texts in domains.items()}


__all__ = ["LikelihoodStats", "corpus_likelihood", "count_words", "document_likelihood",
           "domain_likelihood", "rolling_windows"]
