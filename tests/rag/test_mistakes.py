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
from llmlab.grading import mistakes_rag as m
from llmlab.serve import regex_to_dfa


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
