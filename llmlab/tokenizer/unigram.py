"""The Unigram language-model tokenizer (SentencePiece's default): Viterbi segmentation,
sampling of segmentations, and EM training with pruning.

Kudo 2018, "Subword Regularization: Improving Neural Network Translation Models with Multiple
Subword Candidates", arXiv:1804.10959; Kudo & Richardson 2018, "SentencePiece", arXiv:1808.06226.

A text x is segmented into pieces x_1..x_M with probability prod p(x_i); encoding picks the most
likely segmentation (Viterbi), subword regularization samples one from P(x)^alpha. Training
starts from a large seed vocabulary (frequent substrings) and alternates EM (expected piece
counts by forward-backward, p = count / total) with pruning of the pieces whose removal costs
the corpus likelihood least, until ``vocab_size`` remain; single characters are never pruned.

As in SentencePiece, spaces become "▁" and each text gets a leading "▁"; pieces never cross
a "▁" that starts a word. Leaves out: SentencePiece's Bayesian (digamma) M-step, byte fallback,
normalization rules. Taught in chapter 01 (solutions/01_tokenization).
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Iterable

import regex

SPACE = "\u2581"  # "▁"
UNK_PENALTY = 10.0  # SentencePiece: an unknown character scores min(score) - 10


def normalize(text: str) -> str:
    """SentencePiece's whitespace handling: runs of whitespace become one "▁", plus a leading
    "▁" (``add_dummy_prefix``)."""
    words = text.split()
    return SPACE + SPACE.join(words) if words else ""


def split_words(text: str) -> list[str]:
    """The normalized text cut before every "▁": the units pieces never cross."""
    return regex.findall(f"{SPACE}[^{SPACE}]*", normalize(text))


def viterbi_segment(text: str, scores: dict[str, float], unk_score: float = -100.0,
                    max_len: int | None = None) -> list[str]:
    """Most likely segmentation of ``text`` under a unigram model.

    ``scores``: piece -> log probability. ``best[i]`` is the best log probability of
    ``text[:i]``; a character no piece covers is its own piece scored ``unk_score``. Among equal
    scores the earlier-found split wins. ``max_len``: the longest piece (computed when not
    given). Returns the pieces, in order.
    """
    max_len = max_len or max(map(len, scores), default=1)
    n = len(text)
    best = [0.0] + [-math.inf] * n
    back = [0] * (n + 1)  # back[i]: start of the last piece of the best path to i
    for end in range(1, n + 1):
        for start in range(max(0, end - max_len), end):
            piece = text[start:end]
            s = scores.get(piece)
            if s is None and end - start == 1:
                s = unk_score
            if s is not None and best[start] + s > best[end]:
                best[end], back[end] = best[start] + s, start
    pieces, end = [], n
    while end > 0:
        pieces.append(text[back[end]:end])
        end = back[end]
    return pieces[::-1]


def _lattice(text: str, logp: dict[str, float], max_len: int, unk: float
             ) -> list[list[tuple[int, str, float]]]:
    """``ends[i]``: every (start, piece, log p) whose piece ends at position i."""
    ends: list[list[tuple[int, str, float]]] = [[] for _ in range(len(text) + 1)]
    for start in range(len(text)):
        for end in range(start + 1, min(len(text), start + max_len) + 1):
            piece = text[start:end]
            s = logp.get(piece)
            if s is None and end - start == 1:
                s = unk
            if s is not None:
                ends[end].append((start, piece, s))
    return ends


def _logsumexp(xs: list[float]) -> float:
    m = max(xs)
    return m if m == -math.inf else m + math.log(sum(math.exp(x - m) for x in xs))


def _logaddexp(a: float, b: float) -> float:
    if a < b:
        a, b = b, a
    return a if b == -math.inf else a + math.log1p(math.exp(b - a))


def _forward(ends: list, alpha: float = 1.0) -> list[float]:
    """``fwd[i]`` = log of the summed (scaled) probability of all segmentations of text[:i]."""
    fwd = [0.0] + [-math.inf] * (len(ends) - 1)
    for end in range(1, len(ends)):
        if ends[end]:
            fwd[end] = _logsumexp([fwd[s] + alpha * lp for s, _, lp in ends[end]])
    return fwd


class Unigram:
    """A unigram LM tokenizer: ``pieces`` maps piece -> log probability; ids follow its order."""

    def __init__(self, pieces: dict[str, float]) -> None:
        if not pieces:
            raise ValueError("Unigram needs at least one piece")
        self.pieces = dict(pieces)
        self.ids = {p: i for i, p in enumerate(self.pieces)}
        self.max_len = max(map(len, self.pieces))
        self.unk_score = min(self.pieces.values()) - UNK_PENALTY

    @property
    def vocab_size(self) -> int:
        return len(self.pieces)

    def tokenize(self, text: str) -> list[str]:
        """Most likely pieces (Viterbi), word by word."""
        return [p for w in split_words(text)
                for p in viterbi_segment(w, self.pieces, self.unk_score, self.max_len)]

    def sample(self, text: str, alpha: float = 0.1, rng: random.Random | None = None
               ) -> list[str]:
        """One segmentation drawn from P(x)^alpha (forward filtering, backward sampling);
        a smaller ``alpha`` gives more varied segmentations (subword regularization)."""
        rng = rng or random.Random()
        out = []
        for w in split_words(text):
            ends = _lattice(w, self.pieces, self.max_len, self.unk_score)
            fwd = _forward(ends, alpha)
            pieces, end = [], len(w)
            while end > 0:
                weights = [math.exp(fwd[s] + alpha * lp - fwd[end]) for s, _, lp in ends[end]]
                start, piece, _ = rng.choices(ends[end], weights)[0]
                pieces.append(piece)
                end = start
            out += pieces[::-1]
        return out

    def encode(self, text: str) -> list[int]:
        """Ids of the Viterbi pieces; pieces outside the vocab (unknown characters) raise."""
        try:
            return [self.ids[p] for p in self.tokenize(text)]
        except KeyError as e:
            raise ValueError(f"character {e.args[0]!r} is not in the vocab") from None

    def decode(self, ids: Iterable[int]) -> str:
        pieces = list(self.pieces)
        return "".join(pieces[i] for i in ids).replace(SPACE, " ").lstrip(" ")


def _expected_counts(words: Counter[str], logp: dict[str, float], max_len: int
                     ) -> tuple[Counter[str], float]:
    """E-step: expected count of every piece over all segmentations, and the log likelihood."""
    counts: Counter[str] = Counter()
    loglik = 0.0
    for w, f in words.items():
        ends = _lattice(w, logp, max_len, -math.inf)
        fwd = _forward(ends)
        bwd = [-math.inf] * len(w) + [0.0]
        for end in range(len(w), 0, -1):
            for start, piece, lp in ends[end]:
                bwd[start] = _logaddexp(bwd[start], lp + bwd[end])
                counts[piece] += f * math.exp(fwd[start] + lp + bwd[end] - fwd[-1])
        loglik += f * fwd[-1]
    return counts, loglik


def _prune(words: Counter[str], logp: dict[str, float], keep: int) -> dict[str, float]:
    """Keep the ``keep`` pieces whose removal would cost the likelihood most (single characters
    always stay). Loss of a piece ~ its Viterbi frequency x (log p(piece) - log p of its best
    segmentation without it), as SentencePiece approximates it."""
    freq: Counter[str] = Counter()
    max_len = max(map(len, logp))
    for w, f in words.items():
        for p in viterbi_segment(w, logp, max_len=max_len):
            freq[p] += f
    loss = {}
    for piece, lp in list(logp.items()):
        if len(piece) == 1:
            continue
        del logp[piece]  # its best segmentation without itself
        alt = sum(logp.get(p, -math.inf) for p in viterbi_segment(piece, logp, max_len=max_len))
        logp[piece] = lp
        loss[piece] = freq[piece] * (lp - alt)
    chars = [p for p in logp if len(p) == 1]
    kept = set(sorted(loss, key=lambda p: (-loss[p], p))[: max(keep - len(chars), 0)])
    return {p: logp[p] for p in logp if len(p) == 1 or p in kept}


def train_unigram(texts: Iterable[str], vocab_size: int, seed_size: int = 5000,
                  max_piece_len: int = 8, shrink: float = 0.75, em_steps: int = 2,
                  progress: bool = False) -> Unigram:
    """EM training with pruning (Kudo 2018, section 3.2).

    Seed: every character plus the ``seed_size`` most frequent substrings (length 2 to
    ``max_piece_len``, frequency x length). Then repeat: ``em_steps`` EM steps, keep the best
    ``shrink`` fraction (never below ``vocab_size``), until ``vocab_size`` pieces remain.
    """
    words: Counter[str] = Counter()
    for t in texts:
        words.update(split_words(t))
    chars: Counter[str] = Counter()
    for w, f in words.items():
        for c in w:
            chars[c] += f
    if vocab_size < len(chars):
        raise ValueError(f"vocab_size={vocab_size} is smaller than the alphabet ({len(chars)})")
    subs: Counter[str] = Counter()
    for w, f in words.items():
        for i in range(len(w)):
            for j in range(i + 2, min(len(w), i + max_piece_len) + 1):
                subs[w[i:j]] += f
    seed = [s for s, n in sorted(subs.items(), key=lambda kv: (-kv[1] * len(kv[0]), kv[0]))
            if n > 1][:seed_size]
    counts = Counter({**{c: float(n) for c, n in chars.items()}, **{s: float(subs[s]) for s in seed}})
    logp = _to_logp(counts)
    rounds = 0
    while True:
        for _ in range(em_steps):
            counts, _ = _expected_counts(words, logp, max_piece_len)
            logp = _to_logp(counts + Counter({c: 1e-3 for c in chars}))  # chars stay reachable
        if len(logp) <= vocab_size:
            break
        logp = _prune(words, logp, max(int(len(logp) * shrink), vocab_size))
        rounds += 1
        if progress:
            print(f"round {rounds}: {len(logp)} pieces")
    order = sorted(logp, key=lambda p: (-logp[p], p))
    return Unigram({p: logp[p] for p in order})


def _to_logp(counts: Counter[str]) -> dict[str, float]:
    total = sum(counts.values())
    return {p: math.log(c / total) for p, c in counts.items() if c > 0}
