"""Fast byte-level BPE training (Sennrich et al. 2016, "Neural Machine Translation of Rare Words
with Subword Units", arXiv:1508.07909; byte-level as in GPT-2, Radford et al. 2019).

Same result as the naive trainer in :mod:`llmlab.tokenizer.bpe_basics` (which recounts every
pair after every merge), but each merge only touches the words that contain the merged pair:

- ``pair_counts[(a, b)]`` is the frequency-weighted count of the adjacent pair in all words,
- ``where[(a, b)]`` is the set of words that contain (or once contained) the pair,
- a max-heap of ``(count, pair)`` with lazy deletion picks the next merge.

Merging ``(a, b) -> c`` only lowers the counts of pairs that already exist and creates pairs
that contain ``c``; so a stale heap entry always over-states a count, and re-pushing it with its
true count when it surfaces keeps the heap exact.

Tie-break (documented, deterministic): among equally frequent pairs the lexicographically
greatest pair of byte strings ``(vocab[a], vocab[b])`` wins, as in CS336's assignment 1.

Leaves out: merges across pre-tokens (never allowed), byte fallback/unknown tokens (byte-level
BPE has none), and the min-frequency cut-off some trainers offer. Taught in chapter 01
(solutions/01_tokenization).
"""

from __future__ import annotations

import heapq
import os
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from tqdm.auto import tqdm

from llmlab.tokenizer.pretokenize import GPT2_PATTERN, count_pretokens


def _documents(input: str | os.PathLike | Iterable[str]) -> Iterable[str]:
    """A path (``str`` or ``PathLike``) is read as one UTF-8 document; an iterable of str is a
    sequence of documents (pre-tokens never cross documents)."""
    if isinstance(input, (str, os.PathLike)):
        path = Path(input)
        if not path.is_file():
            raise FileNotFoundError(
                f"train_bpe: {str(input)[:60]!r} is not a file. A str is read as a path; pass "
                "text as a list of documents, e.g. train_bpe([text], vocab_size)."
            )
        return [path.read_text(encoding="utf-8", errors="replace")]
    if isinstance(input, (bytes, bytearray)):
        raise TypeError("train_bpe: pass text (str), not bytes; decode it first")
    return input


class _Inverted:
    """Key that sorts byte strings in *descending* order inside Python's min-heap."""

    __slots__ = ("key",)

    def __init__(self, b: bytes) -> None:
        # 255 - byte reverses the order of bytes; the trailing 256 puts a prefix *after* every
        # longer string that starts with it (descending order).
        self.key = tuple(255 - x for x in b) + (256,)


def _word_pairs(word: list[int]) -> Iterator[tuple[int, int]]:
    return zip(word, word[1:])


def _merge_word(word: list[int], a: int, b: int, c: int) -> list[int] | None:
    """``word`` with every non-overlapping ``a b`` (left to right) replaced by ``c``; None when
    the word has no such pair."""
    out, i, n, changed = [], 0, len(word), False
    while i < n:
        if i + 1 < n and word[i] == a and word[i + 1] == b:
            out.append(c)
            i += 2
            changed = True
        else:
            out.append(word[i])
            i += 1
    return out if changed else None


def bpe_merges_from_counts(
    word_counts: Counter[bytes] | dict[bytes, int], num_merges: int, progress: bool = False
) -> tuple[dict[int, bytes], list[tuple[bytes, bytes]]]:
    """Learn up to ``num_merges`` merges from pre-token byte strings and their counts.

    Returns ``vocab`` (ids 0..255 are the single bytes, then one id per new byte string) and
    ``merges`` in the order learned. Stops early when no pair occurs any more.
    """
    vocab = {i: bytes([i]) for i in range(256)}
    keys = {i: _Inverted(vocab[i]).key for i in range(256)}
    words = [list(w) for w in word_counts]
    freqs = list(word_counts.values())
    pair_counts: dict[tuple[int, int], int] = defaultdict(int)
    where: dict[tuple[int, int], set[int]] = defaultdict(set)
    for i, (w, f) in enumerate(zip(words, freqs)):
        for p in _word_pairs(w):
            pair_counts[p] += f
            where[p].add(i)
    heap = [(-n, keys[a], keys[b], a, b) for (a, b), n in pair_counts.items()]
    heapq.heapify(heap)
    merges: list[tuple[bytes, bytes]] = []
    by_bytes = {v: k for k, v in vocab.items()}
    bar = tqdm(total=num_merges, desc="BPE merges", disable=not progress)
    while len(vocab) < 256 + num_merges and heap:
        neg, _, _, a, b = heapq.heappop(heap)
        true = pair_counts.get((a, b), 0)
        if true != -neg:
            if true > 0:
                heapq.heappush(heap, (-true, keys[a], keys[b], a, b))
            continue
        merged = vocab[a] + vocab[b]
        c = by_bytes.get(merged)
        if c is None:  # a new byte string; an existing one (a+bc == ab+c) keeps its id
            c = len(vocab)
            vocab[c], by_bytes[merged], keys[c] = merged, c, _Inverted(merged).key
        merges.append((vocab[a], vocab[b]))
        _apply_merge(words, freqs, pair_counts, where, heap, keys, a, b, c)
        bar.update(1)
    bar.close()
    return vocab, merges


def _apply_merge(words: list[list[int]], freqs: list[int], pair_counts: dict, where: dict,
                 heap: list, keys: dict, a: int, b: int, c: int) -> None:
    """Merge ``(a, b) -> c`` in the words that contain it, updating counts, index and heap."""
    born: set[tuple[int, int]] = set()
    for i in where.pop((a, b), ()):
        new = _merge_word(words[i], a, b, c)
        if new is None:  # stale index entry: an earlier merge consumed the pair in this word
            continue
        f = freqs[i]
        for p in _word_pairs(words[i]):
            pair_counts[p] -= f
        for p in _word_pairs(new):
            pair_counts[p] += f
            where[p].add(i)
            if c in p:
                born.add(p)
        words[i] = new
    pair_counts.pop((a, b), None)
    for p in born:
        if pair_counts[p] > 0:
            heapq.heappush(heap, (-pair_counts[p], keys[p[0]], keys[p[1]], p[0], p[1]))


def train_bpe(
    input: str | os.PathLike | Iterable[str],
    vocab_size: int,
    special_tokens: list[str] | None = None,
    pattern: str = GPT2_PATTERN,
    num_workers: int = 0,
    progress: bool = False,
    learn_merges: Callable[..., tuple[dict[int, bytes], list[tuple[bytes, bytes]]]] | None = None,
) -> tuple[dict[int, bytes], list[tuple[bytes, bytes]]]:
    """Train a byte-level BPE tokenizer.

    Args:
        input: a path to a UTF-8 text file, or an iterable of documents (str).
        vocab_size: size of the final vocabulary: 256 bytes + merges + special tokens.
        special_tokens: strings cut out of the text before pre-tokenization, never merged, and
            given the last ids of the vocabulary (GPT-2's ``<|endoftext|>`` is id 50256).
        pattern: the pre-tokenization regex (``GPT2_PATTERN`` or ``GPT4_PATTERN``).
        num_workers: processes counting pre-tokens on large inputs (0: one per core).
        progress: show a progress bar over the merges.
        learn_merges: ``(word_counts, num_merges, progress) -> (vocab, merges)``, the merge
            learner (default :func:`bpe_merges_from_counts`); chapter 01 passes the reader's own.

    Returns:
        ``vocab`` (id -> bytes) and ``merges`` (in the order learned).
    """
    special_tokens = list(dict.fromkeys(special_tokens or []))
    if vocab_size < 256 + len(special_tokens):
        raise ValueError(
            f"vocab_size={vocab_size} is too small: it must hold the 256 bytes and the "
            f"{len(special_tokens)} special tokens (>= {256 + len(special_tokens)})"
        )
    counts = count_pretokens(_documents(input), pattern, special_tokens, num_workers)
    word_counts: Counter[bytes] = Counter()
    for piece, n in counts.items():
        word_counts[piece.encode("utf-8")] += n
    learn = learn_merges or bpe_merges_from_counts
    vocab, merges = learn(word_counts, vocab_size - 256 - len(special_tokens), progress)
    for tok in special_tokens:
        vocab[len(vocab)] = tok.encode("utf-8")
    return vocab, merges
