"""Known wrong variants of chapter 12's exercises (retrieval, RAG, tools), so its checks can name
the mistake they see. Each is one plausible slip in an otherwise right answer; they live here,
not in the chapter's check cells, so a visible check never shows a near-solution. Used by
chapter 12 (solutions/12_rag_agents).
"""

from __future__ import annotations

import heapq
import math

import numpy as np
import torch
import torch.nn.functional as F

from llmlab.rag import BM25, BM25Config, hnsw_search, words

# ------------------------------------------------------------------ 12.1 chunk spans


def spans_without_overlap(length, size, overlap=0):
    """Windows that step by ``size``: the overlap is ignored."""
    return [(a, min(a + size, length)) for a in range(0, length, size)]


def spans_with_a_tail_of_overlap(length, size, overlap=0):
    """Every start up to ``length``, so the last window may hold only what the previous one had."""
    return [(a, min(a + size, length)) for a in range(0, length, size - overlap)]


# ------------------------------------------------------------------ 12.2 predict: idf ratio


def idf_ratio_robertson():
    """Robertson's idf ln((N - n + 0.5) / (n + 0.5)) for both words (negative for ``self``)."""
    return math.log(998.5 / 2.5) / math.log(100.5 / 900.5)


def idf_ratio_plain():
    """The textbook ln(N / n), without BM25's 0.5 smoothing and 1 +."""
    return math.log(1000 / 2) / math.log(1000 / 900)


# ------------------------------------------------------------------ 12.3 BM25


def bm25_okapi_idf(corpus, query, k1=1.5, b=0.75):
    """Robertson's idf ln((N - n + 0.5) / (n + 0.5)) (negative for common terms), no floor."""
    bm = BM25(corpus, BM25Config(k1=k1, b=b))
    n = len(corpus)
    bm.idf = {t: math.log((n - len(ids) + 0.5) / (len(ids) + 0.5)) for t, (ids, _) in bm.postings.items()}
    return bm.scores(query)


def bm25_without_length_norm(corpus, query, k1=1.5, b=0.75):
    """Every document treated as average length (b ignored)."""
    return BM25(corpus, BM25Config(k1=k1, b=0.0)).scores(query)


# ------------------------------------------------------------------ 12.4 InfoNCE


def info_nce_without_temperature(q, d, temperature=0.05):
    """Raw cosine similarities as logits (the temperature forgotten)."""
    return F.cross_entropy(q @ d.T, torch.arange(len(q)))


def info_nce_without_positive_in_denominator(q, d, temperature=0.05):
    """The softmax over the negatives only (the diagonal left out of the sum)."""
    logits = q @ d.T / temperature
    eye = torch.eye(len(q), dtype=torch.bool)
    neg = logits.masked_fill(eye, float("-inf")).logsumexp(-1)
    return (neg - logits.diagonal()).mean()


def info_nce_symmetric(q, d, temperature=0.05):
    """CLIP's symmetric loss (both directions averaged) where the query-to-document one was asked."""
    logits = q @ d.T / temperature
    target = torch.arange(len(q))
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2


# ------------------------------------------------------------------ 12.5 metrics


def _metrics(ranked, relevant, k, recall, gain_rank, ideal):
    r = m = n = 0.0
    for ranking, rel in zip(ranked, relevant):
        r += recall(ranking[:k], rel, k)
        m += next((1.0 / (i + 1) for i, d in enumerate(ranking) if d in rel), 0.0)
        dcg = sum(1.0 / math.log2(gain_rank(i)) for i, d in enumerate(ranking[:k]) if d in rel)
        n += dcg / (sum(1.0 / math.log2(gain_rank(i)) for i in range(min(k, len(rel)))) if ideal else 1.0)
    q = len(relevant)
    return r / q, m / q, n / q


def metrics_precision_not_recall(ranked, relevant, k):
    """Hits divided by k (precision@k) where hits divided by the relevant count was asked."""
    return _metrics(ranked, relevant, k, lambda top, rel, k: len(set(top) & rel) / k,
                    lambda i: i + 2, True)


def metrics_unnormalised_dcg(ranked, relevant, k):
    """DCG without dividing by the ideal DCG."""
    return _metrics(ranked, relevant, k, lambda top, rel, k: len(set(top) & rel) / len(rel),
                    lambda i: i + 2, False)


# ------------------------------------------------------------------ 12.6 HNSW search_layer


def search_layer_greedy(index, q, entry, ef, layer):
    """A beam of one (greedy descent) whatever ``ef`` asks for."""
    return index.search_layer(q, entry, 1, layer)


def search_layer_without_early_stop(index, q, entry, ef, layer):
    """Expanding every reachable candidate instead of stopping when the best one left is worse
    than the worst of the ``ef`` results."""
    graph = index.layers[layer]
    visited = set(entry)
    sims = index.sims(q, entry)
    candidates = [(-float(s), n) for s, n in zip(sims, entry)]
    results = [(float(s), n) for s, n in zip(sims, entry)]
    heapq.heapify(candidates)
    heapq.heapify(results)
    while len(results) > ef:
        heapq.heappop(results)
    while candidates:
        _, c = heapq.heappop(candidates)
        fresh = [n for n in graph[c] if n not in visited]
        visited.update(fresh)
        if not fresh:
            continue
        for s, n in zip(index.sims(q, fresh).tolist(), fresh):
            if len(results) < ef or s > results[0][0]:
                heapq.heappush(candidates, (-s, n))
                heapq.heappush(results, (s, n))
                if len(results) > ef:
                    heapq.heappop(results)
    return sorted(results, key=lambda t: (-t[0], t[1]))


# ------------------------------------------------------------------ 12.7 RRF


def rrf_ranks_from_zero(rankings, k=60.0):
    """Ranks counted from 0, so a first place scores 1 / k."""
    scores: dict = {}
    for ranking in rankings:
        for rank, doc in enumerate(ranking):
            scores[doc] = scores.get(doc, 0.0) + 1.0 / (k + rank)
    return sorted(scores.items(), key=lambda kv: -kv[1])


def rrf_without_k(rankings, k=60.0):
    """1 / rank, the constant k left out (the top ranks dominate)."""
    scores: dict = {}
    for ranking in rankings:
        for rank, doc in enumerate(ranking, start=1):
            scores[doc] = scores.get(doc, 0.0) + 1.0 / rank
    return sorted(scores.items(), key=lambda kv: -kv[1])


# ------------------------------------------------------------------ 12.8 hybrid retriever


def _hybrid(kit, query, k, depth, head):
    """The hybrid retriever with the first stages cut to ``head`` and the fused ``head``
    reranked (``head = depth`` is right), or no rerank at all (``head = 0``)."""
    cut = head or depth
    scores = np.asarray(kit.bm25(kit.corpus_words, words(query), 1.2, 0.75))
    lexical = [int(i) for i in np.lexsort((np.arange(len(scores)), -scores))[:cut] if scores[i] > 0]
    dense = hnsw_search(kit, kit.embed(query), cut)
    fused = [doc for doc, _ in kit.fuse([lexical, dense], 60.0)][:cut]
    if head:
        lm = [float(x) for x in kit.lm_score(query, [kit.texts[i] for i in fused])]
        fused = [fused[j] for j in sorted(range(len(fused)), key=lambda j: -lm[j])]
    return fused[:k]


def hybrid_without_rerank(kit, query, k=3, depth=10):
    """The fused order returned as it is: the reranker never consulted."""
    return _hybrid(kit, query, k, depth, 0)


def hybrid_reranking_only_k(kit, query, k=3, depth=10):
    """Only the top ``k`` of each stage fused and reranked, not the top ``depth``."""
    return _hybrid(kit, query, k, depth, k)


# ------------------------------------------------------------------ 12.9 predict: cached tokens


def cached_every_shared_token():
    """All 150 shared tokens: the prefix cache only shares whole blocks."""
    return 150


def cached_rounded_up_to_a_block():
    """150 rounded up to 160: a partial block is not named by a hash, so it is never shared."""
    return 160


# ------------------------------------------------------------------ 12.10 JSON Schema to regex


def integers_with_leading_zeros(schema):
    """Integers as any digits (``007``, ``-0`` accepted): JSON forbids leading zeros."""
    from llmlab.agent.json_schema import INTEGER, schema_to_regex

    return schema_to_regex(schema).replace(INTEGER, "-?[0-9]+")


def strings_with_raw_quotes(schema):
    """String contents as "anything but a newline": an unescaped quote ends nothing."""
    from llmlab.agent.json_schema import STRING_CHAR, schema_to_regex

    return schema_to_regex(schema).replace(STRING_CHAR, '[^\\n]')
