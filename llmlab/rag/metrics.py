"""Retrieval metrics: recall@k, MRR and nDCG@k over a set of queries with known answers.

Each query has a set of relevant document ids and a ranked list of retrieved ids.

- **recall@k**: the fraction of a query's relevant documents found in its top ``k``;
- **MRR** (mean reciprocal rank; Voorhees, TREC-8 QA, 1999): ``1 / rank`` of the first relevant
  document (0 when none is retrieved), averaged over queries;
- **nDCG@k** (Järvelin & Kekäläinen, "Cumulated gain-based evaluation of IR techniques", TOIS
  2002) with binary relevance: ``DCG = Σ_{r ≤ k} rel_r / log2(r + 1)`` divided by the DCG of the
  ideal ranking (all relevant documents first).

Every function averages over queries (a query with no relevant document is an error: its score
is undefined). Taught in chapter 12 (solutions/12_rag_agents).
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence


def _check(retrieved: Sequence[Sequence[Hashable]], relevant: Sequence[set]) -> None:
    if len(retrieved) != len(relevant):
        raise ValueError(f"{len(retrieved)} rankings but {len(relevant)} relevant sets")
    if not relevant:
        raise ValueError("no queries")
    for i, rel in enumerate(relevant):
        if not rel:
            raise ValueError(f"query {i} has no relevant document")


def recall_at_k(retrieved: Sequence[Sequence[Hashable]], relevant: Sequence[set], k: int) -> float:
    """Mean over queries of |relevant ∩ top-k| / |relevant|."""
    _check(retrieved, relevant)
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    return sum(len(set(r[:k]) & rel) / len(rel) for r, rel in zip(retrieved, relevant)) / len(relevant)


def mrr(retrieved: Sequence[Sequence[Hashable]], relevant: Sequence[set]) -> float:
    """Mean over queries of 1 / (rank of the first relevant document), 0 if none."""
    _check(retrieved, relevant)
    total = 0.0
    for ranking, rel in zip(retrieved, relevant):
        total += next((1.0 / (i + 1) for i, d in enumerate(ranking) if d in rel), 0.0)
    return total / len(relevant)


def ndcg_at_k(retrieved: Sequence[Sequence[Hashable]], relevant: Sequence[set], k: int) -> float:
    """Mean over queries of DCG@k / ideal DCG@k, binary relevance."""
    _check(retrieved, relevant)
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    total = 0.0
    for ranking, rel in zip(retrieved, relevant):
        dcg = sum(1.0 / math.log2(i + 2) for i, d in enumerate(ranking[:k]) if d in rel)
        ideal = sum(1.0 / math.log2(i + 2) for i in range(min(k, len(rel))))
        total += dcg / ideal
    return total / len(relevant)


__all__ = ["mrr", "ndcg_at_k", "recall_at_k"]
