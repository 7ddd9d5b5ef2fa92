"""Reciprocal rank fusion (RRF): one ranking from several retrievers' rankings.

Cormack, Clarke & Büttcher, "Reciprocal Rank Fusion outperforms Condorcet and individual Rank
Learning Methods", SIGIR 2009: a document's fused score is

.. math:: \\mathrm{RRF}(d) = \\sum_{r \\in \\text{rankings}} \\frac{1}{k + \\mathrm{rank}_r(d)}

with ranks from 1 and a document absent from a ranking contributing nothing; ``k = 60`` is the
paper's constant (it damps the weight of the very top ranks). Only ranks are used, so a BM25
score and a cosine similarity need no calibration against each other — why hybrid search in
Elasticsearch, OpenSearch, Weaviate and Qdrant defaults to it. Taught in chapter 12
(solutions/12_rag_agents).
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence


def reciprocal_rank_fusion(rankings: Sequence[Sequence[Hashable]], k: float = 60.0,
                           top: int | None = None) -> list[tuple[Hashable, float]]:
    """[(doc, fused score), ...] best first; ties keep the order of first appearance
    (ranking by ranking, rank by rank). ``top`` keeps the first ``top``."""
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    scores: dict[Hashable, float] = {}
    for ranking in rankings:
        if len(set(ranking)) != len(ranking):
            raise ValueError("a ranking lists a document twice")
        for rank, doc in enumerate(ranking, start=1):
            scores[doc] = scores.get(doc, 0.0) + 1.0 / (k + rank)
    order = sorted(scores.items(), key=lambda kv: -kv[1])  # stable: first appearance breaks ties
    return order if top is None else order[:top]


__all__ = ["reciprocal_rank_fusion"]
