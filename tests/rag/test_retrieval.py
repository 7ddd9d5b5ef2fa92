"""Chunking, BM25 (parity with bm25s and rank-bm25), metrics and reciprocal rank fusion."""

from __future__ import annotations

import math

import numpy as np
import pytest

from llmlab.data import Document, load_documents
from llmlab.rag import (
    BM25,
    BM25Config,
    code_pairs,
    fixed_chunks,
    fixed_spans,
    mrr,
    ndcg_at_k,
    recall_at_k,
    reciprocal_rank_fusion,
    structure_chunks,
    words,
)

SOURCE = '''import os


def first(x):
    """Return the first item of a list of things."""
    return x[0]


@property
def second(self):
    """Return the second item of the list we hold."""
    y = self.items
    return y[1]


class Box:
    def get(self):
        return 1
'''


def test_fixed_spans_cover_with_overlap():
    spans = fixed_spans(25, 10, 3)
    assert spans == [(0, 10), (7, 17), (14, 24), (21, 25)]
    assert fixed_spans(10, 10, 3) == [(0, 10)]  # no window of overlap only
    assert fixed_spans(0, 5) == []
    for length, size, overlap in [(1000, 64, 16), (99, 7, 0), (5, 4, 3)]:
        spans = fixed_spans(length, size, overlap)
        assert spans[0][0] == 0 and spans[-1][1] == length
        assert all(b - a <= size for a, b in spans)
        assert all(b2 - a2 and a2 == a + size - overlap for (a, _), (a2, b2) in zip(spans, spans[1:]))
    with pytest.raises(ValueError, match="overlap"):
        fixed_spans(10, 4, 4)


def test_structure_chunks_tile_the_text_at_definitions():
    doc = Document("m.py", SOURCE)
    chunks = structure_chunks(doc, max_chars=120)
    assert "".join(c.text for c in chunks) == SOURCE
    # small statements merge up to max_chars; a chunk never starts inside a definition
    assert [c.text.lstrip().split("\n")[0] for c in chunks] == ["import os", "@property", "class Box:"]
    assert chunks[1].id == f"m.py#{SOURCE.index('@property')}"
    assert all(c.text == SOURCE[c.start:c.end] for c in fixed_chunks(doc, 50, 10))
    broken = Document("b.py", "def (:\n" * 30)
    assert "".join(c.text for c in structure_chunks(broken, 40)) == broken.text


def test_structure_chunks_cut_a_long_class_at_its_methods():
    methods = "".join(f"    def m{i}(self):\n        return {i} * {i}\n\n" for i in range(8))
    source = "import os\n\n\nclass Big:\n    x = 1\n\n" + methods
    spans = structure_chunks(Document("c.py", source), max_chars=80)
    assert "".join(c.text for c in spans) == source and all(len(c.text) <= 80 for c in spans)
    # every method lies whole inside one chunk: the class is cut between methods, never inside
    for i in range(8):
        start = source.index(f"    def m{i}(")
        end = source.index("\n\n", start) + 1
        assert any(c.start <= start and end <= c.end for c in spans), f"m{i} was cut"
    # a flat window of the same size cuts some method in two
    flat = fixed_chunks(Document("c.py", source), 80, 0)
    assert not all(any(c.start <= source.index(f"    def m{i}(") and source.index("\n\n", source.index(
        f"    def m{i}(")) < c.end for c in flat) for i in range(8))


def test_code_pairs_strip_the_docstring_and_keep_spans():
    pairs = code_pairs([Document("m.py", SOURCE)])
    assert [p.name for p in pairs] == ["first", "second"]
    first = pairs[0]
    assert first.query == "Return the first item of a list of things."
    assert '"""' not in first.code and "return x[0]" in first.code
    assert SOURCE[first.start:first.end].startswith("def first")
    assert SOURCE[first.body:].startswith("    return x[0]")
    assert SOURCE[pairs[1].start:].startswith("@property")


def test_words_split_identifiers():
    assert words("readLines_fast(HTTPServer) x 42") == ["read", "lines", "fast", "http", "server", "42"]


@pytest.fixture(scope="module")
def corpus():
    docs = load_documents()[:120]
    return [words(d.text[:4000]) for d in docs]


QUERIES = ["read the file and return its lines", "parse a date string date", "socket connect timeout",
           "zzz unknown words only"]


@pytest.mark.parity
@pytest.mark.parametrize("k1,b", [(1.5, 0.75), (1.2, 0.3)])
def test_bm25_lucene_equals_bm25s(corpus, k1, b):
    bm25s = pytest.importorskip("bm25s")
    ref = bm25s.BM25(k1=k1, b=b, method="lucene")
    ref.index(corpus, show_progress=False)
    ours = BM25(corpus, BM25Config(k1=k1, b=b, method="lucene"))
    for q in QUERIES:
        np.testing.assert_allclose(ours.scores(words(q)), ref.get_scores(words(q)), rtol=1e-5, atol=1e-5)


@pytest.mark.parity
@pytest.mark.parametrize("k1,b,eps", [(1.5, 0.75, 0.25), (0.9, 0.5, 0.1)])
def test_bm25_okapi_equals_rank_bm25(corpus, k1, b, eps):
    rank_bm25 = pytest.importorskip("rank_bm25")
    ref = rank_bm25.BM25Okapi(corpus, k1=k1, b=b, epsilon=eps)
    ours = BM25(corpus, BM25Config(k1=k1, b=b, method="okapi", epsilon=eps))
    for q in QUERIES:
        np.testing.assert_allclose(ours.scores(words(q)), ref.get_scores(words(q)), rtol=1e-9, atol=1e-9)


def test_bm25_by_hand():
    docs = [["a", "b"], ["a", "a", "c"], ["c"]]
    bm = BM25(docs, BM25Config(k1=1.2, b=0.75))
    avg = 2.0
    idf_a = math.log(1 + (3 - 2 + 0.5) / (2 + 0.5))
    tf, dl = 2, 3
    want = idf_a * tf / (tf + 1.2 * (1 - 0.75 + 0.75 * dl / avg))
    assert bm.scores(["a"])[1] == pytest.approx(want)
    assert bm.search(["c", "a"], 2)[0][0] == 1
    with pytest.raises(ValueError, match="method"):
        BM25Config(method="bm42")


def test_metrics_by_hand():
    ranked = [["x", "a", "y"], ["b", "q", "c"], ["z", "w", "v"]]
    rel = [{"a"}, {"b", "c"}, {"v"}]
    assert recall_at_k(ranked, rel, 1) == pytest.approx((0 + 0.5 + 0) / 3)
    assert recall_at_k(ranked, rel, 3) == pytest.approx(1.0)
    assert mrr(ranked, rel) == pytest.approx((1 / 2 + 1 + 1 / 3) / 3)
    ndcg2 = (1 / math.log2(3)) / 1.0
    ndcg_b = (1 + 1 / math.log2(4)) / (1 + 1 / math.log2(3))
    assert ndcg_at_k(ranked, rel, 3) == pytest.approx((ndcg2 + ndcg_b + 0.5) / 3)
    with pytest.raises(ValueError, match="no relevant"):
        mrr([["a"]], [set()])


def test_rrf_by_hand():
    fused = reciprocal_rank_fusion([["a", "b", "c"], ["c", "a"]], k=60)
    scores = dict(fused)
    assert scores["a"] == pytest.approx(1 / 61 + 1 / 62)
    assert scores["c"] == pytest.approx(1 / 63 + 1 / 61)
    assert [d for d, _ in fused] == ["a", "c", "b"]
    assert reciprocal_rank_fusion([["a", "b"], ["b", "a"]], top=1)[0][0] == "a"  # tie: first seen
    with pytest.raises(ValueError, match="twice"):
        reciprocal_rank_fusion([["a", "a"]])
