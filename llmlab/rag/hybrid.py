"""Hybrid retrieval: BM25 and a dense HNSW search, fused by RRF, reranked by the language model.

The retrieval stack of production RAG (Elasticsearch/OpenSearch hybrid search, Vespa, Weaviate,
Pinecone + Cohere Rerank): two first-stage retrievers that fail differently — exact words
(BM25) and paraphrase (dense vectors) — each return their ``depth`` best, reciprocal rank fusion
merges the two lists without calibrating their scores, and a slower reranker that reads query and
document together reorders the fused head. The pieces are passed in a :class:`RetrievalKit`, so
chapter 12 runs this stack on the learner's own BM25, HNSW layer search, fusion and reranker.

HNSW search (Malkov & Yashunin, arXiv:1603.09320, Algorithm 5): from the entry point, descend
the upper layers greedily (a beam of 1), then search layer 0 with a beam of ``max(ef, depth)``.
Taught in chapter 12 (solutions/12_rag_agents).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from llmlab.rag.bm25 import words
from llmlab.rag.hnsw import HNSWIndex


@dataclass
class RetrievalKit:
    """What :func:`hybrid_retrieve` works with.

    texts: the documents; corpus_words: ``words(text)`` of each; index: an :class:`HNSWIndex`
    over their vectors; embed(query) -> (d,) unit vector; bm25(corpus_words, query_words, k1, b)
    -> (n,) scores; search_layer(index, q, entry, ef, layer) -> [(sim, node)] best first;
    fuse(rankings, k) -> [(doc, score)] best first; lm_score(query, texts) -> (len(texts),)
    scores, higher is better."""

    texts: Sequence[str]
    corpus_words: Sequence[Sequence[str]]
    index: HNSWIndex
    embed: Callable[[str], np.ndarray]
    bm25: Callable
    search_layer: Callable
    fuse: Callable
    lm_score: Callable


def hnsw_search(kit: RetrievalKit, q: np.ndarray, k: int, ef: int = 32) -> list[int]:
    """Algorithm 5 with ``kit.search_layer``: the ``k`` nearest nodes found, best first."""
    index = kit.index
    entry = [index.entry]
    for layer in range(index.max_level, 0, -1):
        entry = [kit.search_layer(index, q, entry, 1, layer)[0][1]]
    return [n for _, n in kit.search_layer(index, q, entry, max(ef, k), 0)[:k]]


def hybrid_retrieve(kit: RetrievalKit, query: str, k: int = 3, depth: int = 10,
                    rrf_k: float = 60.0) -> list[int]:
    """Indices of the ``k`` best documents for ``query`` (see the module doc).

    BM25 (k1 = 1.2, b = 0.75) keeps its ``depth`` best with a positive score (ties: lower index
    first); HNSW its ``depth`` nearest; RRF (``rrf_k``) fuses the BM25 list then the dense one;
    the fused ``depth`` best are reranked by ``kit.lm_score`` (ties keep the fused order).
    """
    if k < 1 or depth < k:
        raise ValueError(f"need 1 <= k <= depth, got k={k}, depth={depth}")
    scores = np.asarray(kit.bm25(kit.corpus_words, words(query), 1.2, 0.75))
    order = np.lexsort((np.arange(len(scores)), -scores))
    lexical = [int(i) for i in order[:depth] if scores[i] > 0]
    dense = hnsw_search(kit, kit.embed(query), depth)
    fused = [doc for doc, _ in kit.fuse([lexical, dense], rrf_k)][:depth]
    lm = [float(s) for s in kit.lm_score(query, [kit.texts[i] for i in fused])]
    reranked = sorted(range(len(fused)), key=lambda j: -lm[j])
    return [fused[j] for j in reranked[:k]]


__all__ = ["RetrievalKit", "hnsw_search", "hybrid_retrieve"]
