"""Exact nearest-neighbour search by inner product: the baseline every approximate index is
measured against (``faiss.IndexFlatIP``).

Vectors are L2-normalised by the encoder, so the inner product is the cosine similarity. The
scan costs ``O(n d)`` per query; IVF (:mod:`llmlab.rag.ivf`) and HNSW (:mod:`llmlab.rag.hnsw`)
look at a fraction of the vectors and return most — not all — of the true top ``k``, which
``recall_at`` measures. Taught in chapter 12 (solutions/12_rag_agents).
"""

from __future__ import annotations

import numpy as np


def as_matrix(x, name: str = "vectors") -> np.ndarray:
    """A C-contiguous float32 (n, d) copy-free view where possible; ValueError otherwise."""
    a = np.ascontiguousarray(np.asarray(x, dtype=np.float32))
    if a.ndim != 2 or a.shape[0] == 0:
        raise ValueError(f"{name} must be a non-empty (n, d) matrix, got shape {a.shape}")
    return a


def top_k(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row of ``scores`` (q, n): the ``k`` best (scores, indices), best first; ties by index."""
    k = min(k, scores.shape[1])
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    part_scores = np.take_along_axis(scores, part, 1)
    order = np.lexsort((part, -part_scores), axis=1)
    idx = np.take_along_axis(part, order, 1)
    return np.take_along_axis(scores, idx, 1), idx


def exact_search(vectors, queries, k: int) -> tuple[np.ndarray, np.ndarray]:
    """vectors (n, d), queries (q, d) -> (scores (q, k), indices (q, k)) by inner product."""
    xb, xq = as_matrix(vectors), as_matrix(queries, "queries")
    if xb.shape[1] != xq.shape[1]:
        raise ValueError(f"vectors have d={xb.shape[1]}, queries d={xq.shape[1]}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    return top_k(xq @ xb.T, k)


def recall_at(found: np.ndarray, truth: np.ndarray) -> float:
    """Fraction of the true top-k neighbours (q, k) present in ``found`` (q, k'): recall@k."""
    if found.shape[0] != truth.shape[0]:
        raise ValueError(f"{found.shape[0]} result rows but {truth.shape[0]} truth rows")
    hits = sum(len(set(f.tolist()) & set(t.tolist())) for f, t in zip(found, truth))
    return hits / truth.size


__all__ = ["as_matrix", "exact_search", "recall_at", "top_k"]
