"""BPE in its plainest form: count pairs, merge a pair, train naively, encode with merge ranks.

These are the pieces chapter 01's exercises ask for (solutions/01_tokenization), written for
reading, after karpathy/minbpe's ``basic.py``: ids are ints, bytes 0..255 are ids 0..255, and
merge ``k`` creates id ``256 + k``. The trainer recounts every pair after every merge, which is
O(merges x corpus); :func:`llmlab.tokenizer.train_bpe` learns the same merges with incremental
counts. Sennrich et al. 2016, "Neural Machine Translation of Rare Words with Subword Units",
arXiv:1508.07909.
"""

from __future__ import annotations

from collections import Counter
from typing import TypeVar

from llmlab.tokenizer.pretokenize import GPT2_PATTERN, pretokenize

T = TypeVar("T")


def count_pairs(ids: list[int], counts: dict[tuple[int, int], int] | None = None,
                weight: int = 1) -> dict[tuple[int, int], int]:
    """Count adjacent pairs in ``ids`` (each occurrence adds ``weight``), into ``counts`` when
    given (updated in place and returned) or into a new dict."""
    counts = {} if counts is None else counts
    for pair in zip(ids, ids[1:]):
        counts[pair] = counts.get(pair, 0) + weight
    return counts


def merge_pair(ids: list[T], pair: tuple[T, T], new_id: T) -> list[T]:
    """Replace every occurrence of ``pair`` in ``ids``, scanning left to right without overlap,
    by ``new_id``: ``merge_pair([5, 5, 5], (5, 5), 9) == [9, 5]``. Works on any symbols
    (byte ids here, WordPiece's string pieces in ``wordpiece.py``)."""
    out, i = [], 0
    while i < len(ids):
        if i + 1 < len(ids) and (ids[i], ids[i + 1]) == pair:
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


def train_bpe_naive(text: str, vocab_size: int, pattern: str = GPT2_PATTERN
                    ) -> tuple[dict[int, bytes], list[tuple[bytes, bytes]]]:
    """Train byte-level BPE by recounting all pairs after every merge.

    Pre-tokens are counted once; each step picks the most frequent pair (ties: the
    lexicographically greatest ``(vocab[a], vocab[b])``), records it, and merges it in every
    pre-token. Returns ``vocab`` (id -> bytes) and ``merges`` like ``train_bpe``.
    """
    words = {tuple(w.encode("utf-8")): n for w, n in Counter(pretokenize(text, pattern)).items()}
    vocab = {i: bytes([i]) for i in range(256)}
    merges: list[tuple[bytes, bytes]] = []
    while len(vocab) < vocab_size:
        counts: dict[tuple[int, int], int] = {}
        for w, n in words.items():
            count_pairs(list(w), counts, n)
        if not counts:
            break
        a, b = max(counts, key=lambda p: (counts[p], vocab[p[0]], vocab[p[1]]))
        new_id = len(vocab)
        vocab[new_id] = vocab[a] + vocab[b]
        merges.append((vocab[a], vocab[b]))
        merged: dict[tuple[int, ...], int] = {}
        for w, n in words.items():
            key = tuple(merge_pair(list(w), (a, b), new_id))
            merged[key] = merged.get(key, 0) + n
        words = merged
    return vocab, merges


def bpe_encode(data: bytes, merges: dict[tuple[int, int], int]) -> list[int]:
    """Encode one pre-token's bytes with ``merges`` ((a, b) -> new id; a smaller new id was
    learned earlier and is applied first) until no adjacent pair has a merge."""
    ids = list(data)
    while len(ids) >= 2:
        pairs = count_pairs(ids)
        pair = min(pairs, key=lambda p: merges.get(p, float("inf")))
        if pair not in merges:
            break
        ids = merge_pair(ids, pair, merges[pair])
    return ids
