"""Chapter 12's catalogue of wrong answers: each variant fails its exercise's check, and the
feedback names it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import llmlab.agent as agent
import llmlab.rag as rag
from llmlab import grading
from llmlab.serve import regex_to_dfa
from llmlab_book import ch12_rag_agents as m


def named(fn, ref, cases, catalogue, label):
    """Run the check with ``fn`` as the answer; return the feedback (it must be a failure)."""
    with pytest.raises(AssertionError) as err:
        grading.check_function(fn, ref, cases, mistakes=catalogue)
    assert label in str(err.value), str(err.value)


def every(catalogue, ref, cases):
    for label, fn in catalogue.items():
        named(fn, ref, cases, catalogue, label)


def test_chunk_spans_variants():
    every({"stepping by size": m.spans_without_overlap, "a tail of overlap": m.spans_with_a_tail_of_overlap},
          rag.fixed_spans, [(25, 10, 3), (10, 10, 3), (100, 30, 0)])


def test_bm25_variants():
    toy = [["open", "file", "read"], ["socket", "open"], ["read", "read", "lines", "file", "text"]]

    def ref(corpus, query, k1=1.5, b=0.75):
        return rag.BM25(corpus, rag.BM25Config(k1=k1, b=b)).scores(query)

    every({"okapi idf": m.bm25_okapi_idf, "no length norm": m.bm25_without_length_norm}, ref,
          [(toy, ["read"]), (toy, ["open", "file"], 1.2, 0.5)])


def test_info_nce_variants():
    g = torch.Generator().manual_seed(0)
    cases = [tuple(F.normalize(torch.randn(4, 8, generator=g), dim=-1) for _ in range(2)) + (0.1,)]
    every({"no temperature": m.info_nce_without_temperature,
           "no positive": m.info_nce_without_positive_in_denominator,
           "symmetric": m.info_nce_symmetric}, rag.info_nce, cases)


def test_metric_variants():
    def ref(ranked, relevant, k):
        return (rag.recall_at_k(ranked, relevant, k), rag.mrr(ranked, relevant),
                rag.ndcg_at_k(ranked, relevant, k))

    every({"precision": m.metrics_precision_not_recall, "unnormalised": m.metrics_unnormalised_dcg}, ref,
          [([["x", "a", "y"], ["b", "q", "c"]], [{"a"}, {"b", "c"}], 2), ([[3, 1, 2]], [{2}], 3)])


def test_search_layer_variants():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 16)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    index = rag.HNSWIndex.build(x, rag.HNSWConfig(M=6, ef_construction=24))

    def cost(fn):  # the work of this call alone: variants may share one index
        def probe(idx, q, entry, ef, layer):
            before = idx.distance_computations
            return fn(idx, q, entry, ef, layer), idx.distance_computations - before
        return probe

    def ref(idx, q, entry, ef, layer):
        return idx.search_layer(q, entry, ef, layer)

    catalogue = {"greedy": cost(m.search_layer_greedy), "no stop": cost(m.search_layer_without_early_stop)}
    every(catalogue, cost(ref), [(index, x[0], [index.entry], 10, 0), (index, x[1], [5, 77], 4, 0)])


def test_rrf_variants():
    every({"from zero": m.rrf_ranks_from_zero, "no k": m.rrf_without_k}, rag.reciprocal_rank_fusion,
          [([["a", "b", "c"], ["c", "a"]],), ([[3, 1], [1, 2], [2, 3]], 10.0)])


def schema(props):
    return {"type": "object", "properties": {k: {"type": v} for k, v in props.items()},
            "required": list(props)}


def test_object_regex_variants():
    def language(fn):
        def probe(props, texts):
            dfa = regex_to_dfa(fn(props))
            return [bool(dfa.fullmatch(t.encode())) for t in texts]
        return probe

    texts = ['{"city":"Oslo","days":3,"metric":true}', '{"city":"Oslo","days":03,"metric":true}',
             '{"city":"Oslo","days":3}', '{"city":"Os"lo","days":3,"metric":false}']
    catalogue = {"zeros": language(lambda p: m.integers_with_leading_zeros(schema(p))),
                 "quotes": language(lambda p: m.strings_with_raw_quotes(schema(p)))}
    every(catalogue, language(lambda p: agent.schema_to_regex(schema(p))),
          [({"city": "string", "days": "integer", "metric": "boolean"}, texts)])


def test_prediction_variants(book):
    model, tok = book
    corpus = [["getaddrinfo"] * (i < 2) + ["self"] * (i < 900) + ["pass"] for i in range(1000)]
    idf = rag.BM25(corpus).idf
    ratio = idf["getaddrinfo"] / idf["self"]
    for label, fn in {"robertson": m.idf_ratio_robertson, "plain": m.idf_ratio_plain}.items():
        with pytest.raises(AssertionError) as err:
            grading.check_function(fn, lambda: ratio, [()], rtol=1e-2, mistakes={label: fn})
        assert label in str(err.value)
    shared = list(range(1000, 1150))
    cached = rag.cached_prompt_tokens(model, tok, [shared + [7, 8, 9], shared + [10, 11]])[1]
    assert cached == 144
    every({"every token": m.cached_every_shared_token, "rounded up": m.cached_rounded_up_to_a_block},
          lambda: cached, [()])


def test_hybrid_retriever_variants(book):
    from llmlab.data import load_documents

    model, tok = book
    torch.manual_seed(0)
    encoder = rag.BiEncoder(model, dim=32, n_layers=0)
    pairs = [p for p in rag.code_pairs(load_documents()[:60]) if len(p.code) < 700][:30]
    texts = [p.code for p in pairs]

    def bm25(corpus, query, k1, b):
        return rag.BM25(corpus, rag.BM25Config(k1=k1, b=b)).scores(query)

    kit = rag.RetrievalKit(
        texts=texts, corpus_words=[rag.words(t) for t in texts],
        index=rag.HNSWIndex.build(rag.encode(encoder, tok, texts, max_len=64),
                                  rag.HNSWConfig(M=6, ef_construction=24)),
        embed=lambda s: rag.encode(encoder, tok, [s], max_len=64)[0], bm25=bm25,
        search_layer=lambda idx, q, entry, ef, layer: idx.search_layer(q, entry, ef, layer),
        fuse=rag.reciprocal_rank_fusion, lm_score=lambda q, t: rag.query_likelihood(model, tok, q, t))
    every({"no rerank": m.hybrid_without_rerank, "only k": m.hybrid_reranking_only_k}, rag.hybrid_retrieve,
          [(kit, pairs[0].query), (kit, pairs[5].query, 2, 6)])
