"""Did the model see the test? Overlap with the training data, and membership from the model.

- **n-gram overlap** (GPT-3's contamination study, Brown et al., arXiv:2005.14165, used 13-grams
  of words): an item is flagged when any of its n-grams occurs in the training data; the
  fraction of its n-grams found says how much of it was seen.
- **Min-K% probability** (Shi et al., "Detecting Pretraining Data from Large Language Models",
  arXiv:2310.16789): the mean log-probability of the ``k`` fraction of a text's tokens the model
  finds least likely. A text seen in training has fewer surprising tokens, so a higher score;
  no training data needed, only the model. Its quality is the AUROC separating known members
  from non-members.
Taught in chapter 11 (solutions/11_eval).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence

import torch

from llmlab.evaluate.likelihood import prefix_token_id, token_logprobs

_WORD = re.compile(r"\w+|[^\w\s]")


def words(text: str) -> list[str]:
    """Word and punctuation tokens (whitespace dropped, so re-indented code still matches)."""
    return _WORD.findall(text)


def ngrams(tokens: Sequence[str], n: int) -> set[tuple[str, ...]]:
    """The distinct n-grams of a token sequence."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    return {tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)}


def ngram_index(texts: Iterable[str], n: int = 13) -> set[tuple[str, ...]]:
    """Every word n-gram of the training texts."""
    index: set[tuple[str, ...]] = set()
    for t in texts:
        index |= ngrams(words(t), n)
    return index


def overlap(text: str, index: set[tuple[str, ...]], n: int = 13) -> float:
    """Fraction of ``text``'s word n-grams found in ``index`` (0 when it has none)."""
    grams = ngrams(words(text), n)
    return len(grams & index) / len(grams) if grams else 0.0


def corpus_overlap(texts: Sequence[str], corpus: Iterable[str], n: int = 13) -> list[float]:
    """For each of ``texts``, the fraction of its word n-grams that occur in ``corpus``; the
    corpus is streamed, so only the texts' n-grams are held in memory."""
    grams = [ngrams(words(t), n) for t in texts]
    wanted = set().union(*grams) if grams else set()
    found: set[tuple[str, ...]] = set()
    for doc in corpus:
        w = words(doc)
        found.update(g for g in (tuple(w[i:i + n]) for i in range(len(w) - n + 1)) if g in wanted)
    return [len(g & found) / len(g) if g else 0.0 for g in grams]


def min_k_prob(token_lp: torch.Tensor, k: float = 0.2) -> float:
    """Mean of the lowest ``ceil(k * T)`` of T token log-probabilities. token_lp: (T,)."""
    if token_lp.dim() != 1 or token_lp.numel() == 0 or not 0 < k <= 1:
        raise ValueError(f"need a non-empty (T,) tensor and 0 < k <= 1, got "
                         f"{tuple(token_lp.shape)}, k={k}")
    m = math.ceil(k * token_lp.numel())
    return float(token_lp.double().sort().values[:m].mean())


@torch.no_grad()
def text_token_logprobs(model: torch.nn.Module, tokenizer, text: str,
                        max_length: int | None = None) -> torch.Tensor:
    """log p of each token of ``text`` (after a prefix token), first ``max_length`` tokens."""
    max_length = max_length or model.config.block_size
    ids = [prefix_token_id(tokenizer)] + tokenizer.encode(text)[:max_length]
    device = next(model.parameters()).device
    return token_logprobs(model, torch.tensor([ids], device=device))[0]


def auroc(positives: Sequence[float], negatives: Sequence[float]) -> float:
    """P(a random positive scores above a random negative), ties counted half (the area under
    the ROC curve, as ``sklearn.metrics.roc_auc_score`` computes it)."""
    if not positives or not negatives:
        raise ValueError("need at least one positive and one negative score")
    wins = sum((p > q) + 0.5 * (p == q) for p in positives for q in negatives)
    return wins / (len(positives) * len(negatives))


__all__ = ["auroc", "corpus_overlap", "min_k_prob", "ngram_index", "ngrams", "overlap", "text_token_logprobs",
           "words"]
