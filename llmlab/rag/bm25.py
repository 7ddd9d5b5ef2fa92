"""BM25: the lexical retriever every search engine starts from.

Robertson & Zaragoza, "The Probabilistic Relevance Framework: BM25 and Beyond" (2009). For a
query of terms :math:`q_i` and a document :math:`d` of length :math:`|d|` (mean length
:math:`\\overline{|d|}` over the corpus of :math:`N` documents):

.. math::
    \\mathrm{score}(q, d) = \\sum_i \\mathrm{idf}(q_i)\\,
        \\frac{f(q_i, d)\\,(k_1 + 1)}{f(q_i, d) + k_1 (1 - b + b |d| / \\overline{|d|})}

:math:`f` saturates (a term's tenth occurrence adds little; :math:`k_1` sets how fast) and long
documents are penalised (:math:`b`). Two ``method``\\ s, each equal to a library's scores:

- ``"lucene"`` (Lucene ≥ 8 and ``bm25s``' default): :math:`\\mathrm{idf} = \\ln(1 + (N - n + 0.5)
  / (n + 0.5))` with :math:`n` the documents holding the term, and no :math:`(k_1 + 1)` factor
  (it scales every score equally);
- ``"okapi"`` (``rank_bm25.BM25Okapi``): :math:`\\mathrm{idf} = \\ln((N - n + 0.5) / (n + 0.5))`,
  which is negative for a term in more than half the documents; those idfs are replaced by
  :math:`\\epsilon` times the mean idf.

A query term repeated counts each time (both libraries sum over the query's tokens). The index
is an inverted list per term (documents holding it, and the counts). Taught in chapter 12
(solutions/12_rag_agents).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from llmlab.utils import reject_unknown_keys

_WORD = re.compile(r"[A-Za-z][a-z]+|[A-Z]+(?![a-z])|\d+")


def words(text: str) -> list[str]:
    """Lower-cased words of ``text``, identifiers split at ``_`` and camelCase
    (``readLines_fast`` -> ``["read", "lines", "fast"]``); single letters are dropped."""
    return [w.lower() for w in _WORD.findall(text) if len(w) > 1]


@reject_unknown_keys
@dataclass(frozen=True)
class BM25Config:
    """``k1`` term-frequency saturation, ``b`` length normalisation, ``method`` "lucene" or
    "okapi", ``epsilon`` the okapi idf floor (a fraction of the mean idf)."""

    k1: float = 1.5
    b: float = 0.75
    method: str = "lucene"
    epsilon: float = 0.25

    def __post_init__(self) -> None:
        if self.method not in ("lucene", "okapi"):
            raise ValueError(f"method must be 'lucene' or 'okapi', got {self.method!r}")
        if self.k1 < 0 or not 0 <= self.b <= 1:
            raise ValueError(f"need k1 >= 0 and 0 <= b <= 1, got k1={self.k1}, b={self.b}")


class BM25:
    """An inverted index over tokenized documents; ``scores(query)`` is (n_docs,) float64."""

    def __init__(self, corpus: Sequence[Sequence[str]], config: BM25Config | None = None) -> None:
        if len(corpus) == 0:
            raise ValueError("BM25 needs at least one document")
        self.config = c = config or BM25Config()
        self.n_docs = len(corpus)
        self.doc_len = np.array([len(d) for d in corpus], dtype=np.float64)  # (n_docs,)
        self.avg_len = float(self.doc_len.mean()) or 1.0
        postings: dict[str, tuple[list[int], list[int]]] = {}  # term -> (doc ids, counts)
        for i, doc in enumerate(corpus):
            for term, count in Counter(doc).items():
                ids, counts = postings.setdefault(term, ([], []))
                ids.append(i)
                counts.append(count)
        self.postings = {t: (np.array(ids), np.array(cs, dtype=np.float64))
                         for t, (ids, cs) in postings.items()}
        self.idf = self._idf({t: len(ids) for t, (ids, _) in postings.items()})
        self._norm = c.k1 * (1 - c.b + c.b * self.doc_len / self.avg_len)  # (n_docs,)

    def _idf(self, df: dict[str, int]) -> dict[str, float]:
        n, c = self.n_docs, self.config
        if c.method == "lucene":
            return {t: math.log(1 + (n - k + 0.5) / (k + 0.5)) for t, k in df.items()}
        idf = {t: math.log(n - k + 0.5) - math.log(k + 0.5) for t, k in df.items()}
        floor = c.epsilon * sum(idf.values()) / len(idf)
        return {t: (v if v >= 0 else floor) for t, v in idf.items()}

    @classmethod
    def corpus_scores(cls, corpus: Sequence[Sequence[str]], query: Sequence[str], k1: float = 1.5,
                      b: float = 0.75) -> np.ndarray:
        """Lucene BM25 scores of ``query`` over a one-off index of ``corpus``: the signature of a
        :class:`~llmlab.rag.hybrid.RetrievalKit`'s ``bm25`` (and picklable, unlike a lambda)."""
        return cls(corpus, BM25Config(k1=k1, b=b)).scores(query)

    def scores(self, query: Sequence[str]) -> np.ndarray:
        """BM25 score of every document for the tokenized ``query``: (n_docs,) float64."""
        out = np.zeros(self.n_docs)
        gain = self.config.k1 + 1 if self.config.method == "okapi" else 1.0
        for term in query:
            if term not in self.postings:
                continue
            ids, tf = self.postings[term]
            out[ids] += self.idf[term] * tf * gain / (tf + self._norm[ids])
        return out

    def search(self, query: Sequence[str], k: int = 10) -> list[tuple[int, float]]:
        """The ``k`` best (document index, score), best first (ties: lower index first)."""
        s = self.scores(query)
        order = np.lexsort((np.arange(len(s)), -s))[:k]
        return [(int(i), float(s[i])) for i in order]


__all__ = ["BM25", "BM25Config", "words"]
