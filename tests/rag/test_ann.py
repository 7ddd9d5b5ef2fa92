"""Exact, IVF and HNSW search: against each other and against faiss on the same vectors."""

from __future__ import annotations

import numpy as np
import pytest

from llmlab.rag import HNSWConfig, HNSWIndex, IVFIndex, exact_search, kmeans, recall_at


def clustered(n: int, d: int, seed: int) -> np.ndarray:
    """Unit vectors around 20 centres: the shape real embeddings have (not uniform noise)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(20, d))
    x = centres[rng.integers(20, size=n)] + 0.6 * rng.normal(size=(n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def data():
    x = clustered(1200, 32, 0)
    q = clustered(60, 32, 1)
    return x, q, exact_search(x, q, 10)[1]


def test_exact_search_is_the_brute_force_top_k(data):
    x, q, truth = data
    scores, idx = exact_search(x, q, 10)
    brute = np.argsort(-(q @ x.T), axis=1, kind="stable")[:, :10]
    assert np.array_equal(idx, brute)
    assert np.all(np.diff(scores, axis=1) <= 0)
    with pytest.raises(ValueError, match="d="):
        exact_search(x, q[:, :5], 3)


def test_kmeans_centroids_and_ivf_exact_at_full_probe(data):
    x, q, truth = data
    c = kmeans(x, 8, iters=10)
    assert c.shape == (8, 32) and np.allclose(np.linalg.norm(c, axis=1), 1, atol=1e-5)
    ivf = IVFIndex.build(x, 16)
    assert sorted(np.concatenate(ivf.lists).tolist()) == list(range(len(x)))  # each vector once
    assert np.array_equal(ivf.search(q, 10, nprobe=16)[1], truth)
    r1, r4 = (recall_at(ivf.search(q, 10, nprobe=p)[1], truth) for p in (1, 4))
    assert r1 < r4 <= 1.0 and r4 > 0.8
    assert ivf.scanned_fraction(q, 4) < 0.5


def test_hnsw_recall_rises_with_ef_and_scans_a_fraction(data):
    x, q, truth = data
    index = HNSWIndex.build(x, HNSWConfig(M=8, ef_construction=40))
    assert max(len(v) for v in index.layers[0].values()) <= 16  # 2M links on layer 0
    assert all(len(v) <= 8 for layer in index.layers[1:] for v in layer.values())
    index.distance_computations = 0
    low = recall_at(index.search(q, 10, ef=10)[1], truth)
    high = recall_at(index.search(q, 10, ef=80)[1], truth)
    per_query = index.distance_computations / (2 * len(q))
    assert high >= low and high > 0.95
    assert per_query < 0.6 * len(x)  # a graph search scores a fraction of the vectors


@pytest.mark.parity
def test_flat_and_hnsw_against_faiss(data):
    faiss = pytest.importorskip("faiss")
    x, q, truth = data
    flat = faiss.IndexFlatIP(x.shape[1])
    flat.add(x)
    scores, idx = flat.search(q, 10)
    ours_scores, ours_idx = exact_search(x, q, 10)
    np.testing.assert_allclose(ours_scores, scores, atol=1e-5)
    assert recall_at(ours_idx, idx) == 1.0
    ref = faiss.IndexHNSWFlat(x.shape[1], 8, faiss.METRIC_INNER_PRODUCT)
    ref.hnsw.efConstruction = 40
    ref.add(x)
    ours = HNSWIndex.build(x, HNSWConfig(M=8, ef_construction=40))
    for ef in (16, 64):
        ref.hnsw.efSearch = ef
        theirs = recall_at(ref.search(q, 10)[1], truth)
        mine = recall_at(ours.search(q, 10, ef=ef)[1], truth)
        assert abs(mine - theirs) < 0.05, (ef, mine, theirs)


@pytest.mark.parity
def test_ivf_against_faiss(data):
    faiss = pytest.importorskip("faiss")
    x, q, truth = data
    quantizer = faiss.IndexFlatIP(x.shape[1])
    ref = faiss.IndexIVFFlat(quantizer, x.shape[1], 16, faiss.METRIC_INNER_PRODUCT)
    ref.train(x)
    ref.add(x)
    ours = IVFIndex.build(x, 16)
    for nprobe in (2, 8):
        ref.nprobe = nprobe
        theirs = recall_at(ref.search(q, 10)[1], truth)
        mine = recall_at(ours.search(q, 10, nprobe=nprobe)[1], truth)
        assert abs(mine - theirs) < 0.1, (nprobe, mine, theirs)
