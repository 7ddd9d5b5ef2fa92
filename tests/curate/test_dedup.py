"""Exact, MinHash-LSH and semantic dedup: labels caught, datasketch's signatures and candidate
pairs bit for bit, SemDeDup against a direct loop."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from llmlab.curate import (
    Doc,
    MinHashConfig,
    candidate_probability,
    dedup_docs,
    dedup_file,
    dedup_lines,
    estimate_jaccard,
    jaccard,
    jaccard_pairs,
    kmeans,
    lsh_candidates,
    lsh_params,
    minhash_signature,
    near_dedup,
    normalize,
    permutations,
    read_docs,
    semdedup,
    shingles,
    write_docs,
)


def test_exact_dedup_keeps_first_copies(crawl):
    mains = [d.meta["main"] for d in crawl]
    keep = dedup_docs(mains)
    for d, k in zip(crawl, keep):
        if d.meta["dup_of"] is not None:
            assert not k, d.id  # every labelled copy goes
    assert keep[0] and sum(keep) == len(set(map(normalize, mains)))
    assert dedup_docs(["Hello, World 2024!", "hello world 1999", "hello  world"]) == [True, False, True]


def test_line_dedup_across_documents():
    a = "Intro line\nShared footer line\nshared FOOTER line"
    b = "Other text\nShared footer line!\n"
    assert dedup_lines([a, b]) == [a, "Other text\n"]  # repeats inside one document stay
    assert dedup_lines(["x\nlong enough"], min_chars=5) == ["x\nlong enough"]


def test_dedup_file_round_trip(tmp_path):
    src, dst = tmp_path / "in.jsonl.gz", tmp_path / "out.jsonl"
    docs = [Doc(str(i), t, {"i": i}) for i, t in enumerate(["a b", "A  b", "c", "a b."])]
    assert write_docs(src, docs) == 4
    assert dedup_file(src, dst) == {"read": 4, "written": 2}
    assert [d.text for d in read_docs(dst)] == ["a b", "c"]
    with pytest.raises(ValueError, match="'doc' or 'line'"):
        dedup_file(src, dst, level="page")


def test_shingles():
    assert shingles("One two three", 5) == {b"one two three"}
    assert shingles("", 3) == set()
    assert shingles("a b c d", 3) == {b"a b c", b"b c d"}


def test_minhash_estimates_jaccard_within_its_error():
    a, b = permutations(256, seed=3)
    rng = np.random.default_rng(0)
    for overlap in (0.2, 0.5, 0.8):
        common = {f"w{i}".encode() for i in range(int(400 * overlap))}
        x = common | {f"x{i}".encode() for i in range(400 - len(common))}
        y = common | {f"y{i}".encode() for i in range(400 - len(common))}
        j = jaccard(x, y)
        est = estimate_jaccard(minhash_signature(x, a, b), minhash_signature(y, a, b))
        assert abs(est - j) < 4 * math.sqrt(j * (1 - j) / 256), (j, est)
    del rng
    assert (minhash_signature([], a, b) == 0xFFFFFFFF).all()


def test_lsh_candidates_are_band_collisions():
    sigs = np.array([[1, 2, 3, 4], [1, 2, 9, 9], [0, 2, 3, 4], [7, 7, 3, 4]], dtype=np.uint32)
    assert lsh_candidates(sigs, 2, 2) == {(0, 1), (0, 2), (0, 3), (2, 3)}
    with pytest.raises(ValueError, match="bands \\* rows"):
        lsh_candidates(sigs, 3, 2)
    with pytest.raises(ValueError, match="exceeds num_perm"):
        MinHashConfig(num_perm=64, bands=9, rows=8)


def test_s_curve_matches_simulation():
    rng = np.random.default_rng(0)
    for j in (0.3, 0.6, 0.85):
        agree = rng.random((20_000, 16 * 8)) < j  # each permutation agrees with probability j
        hit = agree.reshape(-1, 16, 8).all(-1).any(-1).mean()
        assert abs(hit - candidate_probability(j, 16, 8)) < 0.015


def test_jaccard_pairs_equal_brute_force():
    rng = np.random.default_rng(1)
    sets = [set(rng.integers(0, 30, rng.integers(0, 20)).tolist()) for _ in range(40)]
    truth = {(i, j) for i, j in itertools.combinations(range(40), 2) if jaccard(sets[i], sets[j]) >= 0.3}
    assert jaccard_pairs(sets, 0.3) == truth and truth


def test_near_dedup_on_the_crawl(crawl, texts):
    keep = near_dedup(texts)
    near = [d.meta["near_dup_of"] is not None for d in crawl]
    caught = sum(n and not k for n, k in zip(near, keep))
    assert caught / sum(near) > 0.85, (caught, sum(near))
    # pages with no copy at all, and no boilerplate twin (licences are near-identical by nature)
    unique = [i for i, d in enumerate(crawl) if d.meta["domain"] == "docs" and d.meta["dup_of"] is None
              and d.meta["near_dup_of"] is None and d.meta["paraphrase_of"] is None]
    assert sum(keep[i] for i in unique) / len(unique) > 0.97


@pytest.mark.parity
def test_signatures_and_candidates_equal_datasketch(texts):
    datasketch = pytest.importorskip("datasketch")
    from datasketch.lsh import _optimal_param
    sample = [t for t in texts if t.strip()][:300]
    a, b = permutations(128, seed=1)
    ours = np.stack([minhash_signature(shingles(t), a, b) for t in sample])
    lsh = datasketch.MinHashLSH(num_perm=128, params=(16, 8))
    for i, t in enumerate(sample):
        m = datasketch.MinHash(num_perm=128, seed=1, scheme="affine32")
        m.update_batch(list(shingles(t)))
        assert np.array_equal(m.hashvalues, ours[i]), i
        lsh.insert(i, m)
    theirs = {(min(i, j), max(i, j)) for i in range(len(sample))
              for j in lsh.query(datasketch.MinHash(num_perm=128, hashvalues=ours[i], scheme="affine32"))
              if i != j}
    assert lsh_candidates(ours, 16, 8) == theirs and len(theirs) > 10
    for threshold, num_perm in ((0.5, 64), (0.7, 128), (0.85, 256)):
        assert lsh_params(threshold, num_perm) == _optimal_param(threshold, num_perm, 0.5, 0.5)


def _semdedup_loop(emb, labels, centroids, eps):
    keep = [True] * len(emb)
    for c in range(len(centroids)):
        members = [i for i in range(len(emb)) if labels[i] == c]
        members.sort(key=lambda i: float(emb[i] @ centroids[c]))
        for pos, i in enumerate(members):
            if any(float(emb[i] @ emb[j]) > 1 - eps for j in members[:pos]):
                keep[i] = False
    return keep


def test_semdedup_equals_the_direct_loop():
    gen = torch.Generator().manual_seed(0)
    base = torch.nn.functional.normalize(torch.randn(30, 16, generator=gen), dim=-1)
    near = torch.nn.functional.normalize(base[:10] + 0.05 * torch.randn(10, 16, generator=gen), dim=-1)
    emb = torch.cat([base, near])
    labels, centroids = kmeans(emb, 4, seed=0)
    assert set(labels.tolist()) <= set(range(4))
    keep = semdedup(emb, labels, centroids, eps=0.05)
    assert keep == _semdedup_loop(emb, labels, centroids, 0.05)
    dropped = [i for i, k in enumerate(keep) if not k]
    assert sorted(i % 30 for i in dropped) == list(range(10))  # one of each planted pair
    with pytest.raises(ValueError, match="k <= n"):
        kmeans(emb, 100)
