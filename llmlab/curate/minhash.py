"""MinHash and locality-sensitive hashing: find near-duplicate documents without comparing all
pairs.

Two documents are near-duplicates when the Jaccard similarity of their sets of word n-grams
(*shingles*) is high: J(A, B) = |A ∩ B| / |A ∪ B|. Comparing every pair costs n²/2 set
intersections — 5·10¹⁷ for a billion documents. Broder ("On the Resemblance and Containment of
Documents", 1997) showed that for a random permutation π of shingle ids,
P[min π(A) = min π(B)] = J(A, B): a *signature* of k such minima estimates J with standard error
sqrt(J(1-J)/k). LSH (Indyk & Motwani 1998; Leskovec, Rajaraman & Ullman, *Mining of Massive
Datasets*, ch. 3) cuts the signature into b bands of r rows and makes two documents *candidates*
when all r rows of some band agree, which happens with probability 1 - (1 - J^r)^b — an S-curve
whose threshold sits near (1/b)^(1/r). Only candidates are compared.

The permutations are datasketch's: a shingle is hashed to 32 bits (SHA-1's first 4 bytes, little
endian), mixed by MurmurHash3's finaliser, and permuted by h -> a·h + b mod 2³² with odd a.
Given the same (a, b), signatures and candidate pairs equal datasketch's ``MinHash`` and
``MinHashLSH`` bit for bit (tests/curate/test_parity_minhash.py); the signature of one document
is one numpy expression over all its shingles and all permutations at once. Used for GPT-3, The
Pile, RefinedWeb, FineWeb (datatrove's 14 bands × 8 rows on 5-grams) and SlimPajama.
Taught in chapter 10 (solutions/10_data).
"""

from __future__ import annotations

import hashlib
import struct
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from llmlab.curate.text import split_words
from llmlab.utils import reject_unknown_keys

MAX_HASH = np.uint32(0xFFFFFFFF)


@reject_unknown_keys
@dataclass
class MinHashConfig:
    """Shingles, signature length and bands; ``bands * rows`` must not exceed ``num_perm``."""

    ngram: int = 5
    num_perm: int = 128
    bands: int = 16
    rows: int = 8
    threshold: float = 0.7  # candidate pairs are kept when their estimated Jaccard reaches this
    seed: int = 1

    def __post_init__(self) -> None:
        if self.bands * self.rows > self.num_perm:
            raise ValueError(f"bands * rows = {self.bands * self.rows} exceeds num_perm = "
                             f"{self.num_perm}")


def shingles(text: str, n: int = 5) -> set[bytes]:
    """The set of lowercased word n-grams of ``text`` (joined by spaces, UTF-8); a text of fewer
    than n words is one shingle; an empty text has none."""
    words = [w.lower() for w in split_words(text)]
    if len(words) < n:
        return {" ".join(words).encode("utf-8")} if words else set()
    return {" ".join(words[i:i + n]).encode("utf-8") for i in range(len(words) - n + 1)}


def sha1_hash32(data: bytes) -> int:
    """The first 4 bytes of SHA-1, little endian (datasketch's default hash)."""
    return struct.unpack("<I", hashlib.sha1(data).digest()[:4])[0]


def fmix32(h: np.ndarray) -> np.ndarray:
    """MurmurHash3's 32-bit finaliser, a bijection that spreads structured inputs."""
    h = h.astype(np.uint32)
    h ^= h >> np.uint32(16)
    h *= np.uint32(0x85EBCA6B)
    h ^= h >> np.uint32(13)
    h *= np.uint32(0xC2B2AE35)
    h ^= h >> np.uint32(16)
    return h


def permutations(num_perm: int, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """(a, b), each (num_perm,) uint32, a odd — the same values datasketch draws for ``seed``."""
    gen = np.random.RandomState(seed)
    a = gen.randint(0, 1 << 31, num_perm, dtype=np.uint32) * np.uint32(2) + np.uint32(1)
    b = gen.randint(0, 1 << 32, num_perm, dtype=np.uint64).astype(np.uint32)
    return a, b


def minhash_signature(items: Iterable[bytes], a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(num_perm,) uint32: the minimum of a·fmix(h) + b mod 2³² over the items' hashes h, per
    permutation; all ``0xFFFFFFFF`` for no items."""
    hashes = np.fromiter((sha1_hash32(x) for x in items), dtype=np.uint32)
    if not len(hashes):
        return np.full(len(a), MAX_HASH, dtype=np.uint32)
    with np.errstate(over="ignore"):
        return (np.outer(fmix32(hashes), a) + b).min(axis=0)  # (items, perms) wraps mod 2^32


def estimate_jaccard(sig_a: np.ndarray, sig_b: np.ndarray) -> float:
    """The fraction of permutations whose minima agree."""
    return float(np.mean(sig_a == sig_b))


def candidate_probability(jaccard: float, bands: int, rows: int) -> float:
    """P[a pair with this Jaccard shares a band]: 1 - (1 - J^rows)^bands."""
    return 1.0 - (1.0 - jaccard ** rows) ** bands


def _integral(f, lo: float, hi: float, n: int = 400) -> float:
    x = np.linspace(lo, hi, n + 1)
    y = f(x)
    return float((hi - lo) / n * (y[0] / 2 + y[1:-1].sum() + y[-1] / 2))


def lsh_params(threshold: float, num_perm: int, fp_weight: float = 0.5,
               fn_weight: float = 0.5) -> tuple[int, int]:
    """(bands, rows) minimising the weighted area of false positives below ``threshold`` and false
    negatives above it under the S-curve (datasketch's ``_optimal_param``)."""
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"threshold must be in (0, 1), got {threshold}")
    best, best_err = (0, 0), float("inf")
    for b in range(1, num_perm + 1):
        for r in range(1, num_perm // b + 1):
            fp = _integral(lambda s, b=b, r=r: 1 - (1 - s ** r) ** b, 0.0, threshold)
            fn = _integral(lambda s, b=b, r=r: (1 - s ** r) ** b, threshold, 1.0)
            err = fp * fp_weight + fn * fn_weight
            if err < best_err:
                best, best_err = (b, r), err
    return best


def lsh_candidates(signatures: np.ndarray, bands: int, rows: int) -> set[tuple[int, int]]:
    """Pairs (i, j), i < j, of rows of ``signatures`` (n, num_perm) that agree on all ``rows``
    values of at least one of ``bands`` consecutive bands."""
    if signatures.ndim != 2 or bands * rows > signatures.shape[1]:
        raise ValueError(f"signatures must be (n, num_perm >= bands * rows = {bands * rows}), "
                         f"got {signatures.shape}")
    pairs: set[tuple[int, int]] = set()
    for band in range(bands):
        buckets: dict[bytes, list[int]] = {}
        for i, key in enumerate(signatures[:, band * rows:(band + 1) * rows]):
            buckets.setdefault(key.tobytes(), []).append(i)
        for members in buckets.values():
            pairs.update((members[x], members[y]) for x in range(len(members))
                         for y in range(x + 1, len(members)))
    return pairs


class UnionFind:
    """Clusters of documents joined by duplicate pairs; the root is the smallest index."""

    def __init__(self, n: int) -> None:
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, i: int, j: int) -> None:
        ri, rj = self.find(i), self.find(j)
        if ri != rj:
            self.parent[max(ri, rj)] = min(ri, rj)


def near_dedup(texts: Sequence[str], cfg: MinHashConfig | None = None) -> list[bool]:
    """For each text, whether it is kept: candidates whose estimated Jaccard reaches
    ``cfg.threshold`` are joined into clusters, and each cluster keeps its first text."""
    cfg = cfg or MinHashConfig()
    a, b = permutations(cfg.num_perm, cfg.seed)
    sigs = np.stack([minhash_signature(shingles(t, cfg.ngram), a, b) for t in texts]) \
        if texts else np.zeros((0, cfg.num_perm), np.uint32)
    uf = UnionFind(len(texts))
    for i, j in lsh_candidates(sigs, cfg.bands, cfg.rows):
        if estimate_jaccard(sigs[i], sigs[j]) >= cfg.threshold:
            uf.union(i, j)
    return [uf.find(i) == i for i in range(len(texts))]


def jaccard(a: set, b: set) -> float:
    """|A ∩ B| / |A ∪ B| (1 for two empty sets)."""
    return len(a & b) / len(a | b) if a or b else 1.0


def jaccard_pairs(sets: Sequence[set], threshold: float) -> set[tuple[int, int]]:
    """Every pair (i, j), i < j, with exact Jaccard >= threshold: the ground truth LSH
    approximates, as one sparse product (documents x shingles) @ its transpose, whose entries
    are the intersection sizes (fine for thousands of documents, quadratic beyond)."""
    vocab: dict[bytes, int] = {}
    rows, cols = [], []
    for i, s in enumerate(sets):
        for x in s:
            rows.append(i)
            cols.append(vocab.setdefault(x, len(vocab)))
    if not rows:
        return set()
    x = torch.sparse_coo_tensor(torch.tensor([rows, cols]), torch.ones(len(rows)),
                                (len(sets), len(vocab)), check_invariants=True).coalesce()
    with warnings.catch_warnings():  # torch routes this through its (beta) CSR kernels
        warnings.simplefilter("ignore", UserWarning)
        inter = torch.sparse.mm(x, x.t()).coalesce()
    (i, j), n = inter.indices(), inter.values()
    upper = i < j
    i, j, n = i[upper], j[upper], n[upper]
    size = torch.tensor([len(s) for s in sets], dtype=torch.float)
    keep = n / (size[i] + size[j] - n) >= threshold
    return set(zip(i[keep].tolist(), j[keep].tolist()))
