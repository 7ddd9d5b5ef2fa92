"""Calibrated membership signals: Min-K%++ against a per-token loop, the zlib ratio by hand, the
bigram reference against counting by hand, and AUROC of every signal against scikit-learn."""

from __future__ import annotations

import math
import zlib
from collections import Counter

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from llmlab.evaluate import (
    BigramReference,
    TokenStats,
    auroc,
    auroc_interval,
    fit_reference,
    membership_scores,
    min_k_plus_plus,
    reference_calibrated,
    reference_corpus,
    text_token_logprobs,
    text_token_stats,
    zlib_ratio,
)
from llmlab.evaluate.membership import distribution_stats, text_ids


def _naive_min_k_pp(logits: torch.Tensor, targets: list[int], k: float) -> float:
    """Zhang et al.'s score, one position and one vocabulary entry at a time in plain Python."""
    zs = []
    for row, x in zip(logits.tolist(), targets):
        m = max(row)
        log_norm = m + math.log(sum(math.exp(v - m) for v in row))
        logp = [v - log_norm for v in row]
        mu = sum(math.exp(lp) * lp for lp in logp)
        var = sum(math.exp(lp) * (lp - mu) ** 2 for lp in logp)
        zs.append((logp[x] - mu) / math.sqrt(var))
    zs.sort()
    lowest = zs[:math.ceil(k * len(zs))]
    return sum(lowest) / len(lowest)


@pytest.mark.parametrize("k", [0.2, 0.5, 1.0])
def test_min_k_plus_plus_equals_a_per_token_loop(k):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(23, 50, generator=g) * 3
    targets = torch.randint(0, 50, (23,), generator=g)
    ours = min_k_plus_plus(distribution_stats(logits, targets), k)
    assert ours == pytest.approx(_naive_min_k_pp(logits, targets.tolist(), k), rel=1e-9)


def test_min_k_plus_plus_is_not_min_k_of_logprobs():
    """Standardising changes the ranking: a token likely in absolute terms but below its
    position's typical log-probability is what Min-K%++ flags."""
    stats = TokenStats(torch.tensor([-1.0, -3.0]), torch.tensor([-0.5, -4.0]), torch.tensor([0.5, 1.0]))
    assert min_k_plus_plus(stats, 0.5) == pytest.approx(-1.0)  # z = (-1, +1): the first is lowest
    with pytest.raises(ValueError):
        min_k_plus_plus(TokenStats(torch.zeros(3), torch.zeros(2), torch.ones(3)))


def test_text_token_stats_matches_the_model(model, tokenizer):
    text = "def add(a, b):\n    return a + b\n"
    stats = text_token_stats(model, tokenizer, text)
    assert torch.allclose(stats.logprob.float(), text_token_logprobs(model, tokenizer, text), atol=1e-5)
    ids = torch.tensor([text_ids(tokenizer, text, 32)])
    logp = model(ids[:, :-1])[0].float().log_softmax(-1).double()
    assert torch.allclose(stats.mu, (logp.exp() * logp).sum(-1), atol=1e-9)
    var = (logp.exp() * (logp - stats.mu[:, None]) ** 2).sum(-1)
    assert torch.allclose(stats.sigma ** 2, var, atol=1e-9)


def test_zlib_ratio_by_hand():
    lp = torch.tensor([-0.5, -1.5, -2.5])
    text = "return a + b  # " * 5
    assert zlib_ratio(lp, text) == pytest.approx(1.5 / len(zlib.compress(text.encode("utf-8"))))
    # the same loss on a less compressible text is a lower ratio: more surprising for a model
    assert zlib_ratio(lp, "x7Qp!e3Lz0") > zlib_ratio(lp, "a completely different longer text, 1234567")
    with pytest.raises(ValueError):
        zlib_ratio(lp, "")


def test_bigram_reference_equals_counting_by_hand():
    docs = [[0, 1, 2, 1, 2, 3], [2, 1, 0]]
    v, lam = 5, 0.7
    ref = BigramReference.fit(docs, v, lam)
    uni = Counter(t for d in docs for t in d)
    pairs = Counter((a, b) for d in docs for a, b in zip(d, d[1:]))  # never across documents
    ctx = Counter(a for d in docs for a in d[:-1])
    n = sum(uni.values())

    def p(a, b):
        u = (uni[b] + 1) / (n + v)
        return lam * pairs[(a, b)] / ctx[a] + (1 - lam) * u if ctx[a] else u

    seq = [0, 1, 2, 3, 4, 3, 1]
    expect = [math.log(p(a, b)) for a, b in zip(seq, seq[1:])]
    assert ref.token_logprobs(seq).tolist() == pytest.approx(expect)
    for a in range(v):  # every conditional distribution sums to one
        total = sum(math.exp(float(ref.token_logprobs([a, b])[0])) for b in range(v))
        assert total == pytest.approx(1.0)
    with pytest.raises(ValueError):
        ref.token_logprobs([0, 7])
    with pytest.raises(ValueError):
        BigramReference.fit([[0, 9]], v)


def test_reference_corpus_leaves_out_files_holding_a_candidate():
    cand = "def area(r):\n    \"\"\"Area.\"\"\"\n    return 3.14 * r * r\n"
    files = ["class C:\n    def area(r):\n        return 0\n", "def volume(r):\n    return r\n"]
    assert reference_corpus(files, [cand]) == [files[1]]


def test_reference_calibration_divides_out_difficulty():
    """Texts of widely different difficulty, members 0.3 nats easier for the target than the
    reference says: the raw loss cannot tell them apart, target minus reference can."""
    rng = np.random.default_rng(0)
    difficulty = rng.uniform(1, 4, 80)
    member = np.arange(80) < 40
    ref_lp = [torch.full((20,), -d) for d in difficulty]
    tgt_lp = [torch.full((20,), -(d - 0.3 * m)) for d, m in zip(difficulty, member)]
    raw = [-float(-t.mean()) for t in tgt_lp]
    cal = [-reference_calibrated(t, r) for t, r in zip(tgt_lp, ref_lp)]

    def split(s):
        return [x for x, m in zip(s, member) if m], [x for x, m in zip(s, member) if not m]

    assert auroc(*split(cal)) == 1.0
    assert abs(auroc(*split(raw)) - 0.5) < 0.2
    with pytest.raises(ValueError):
        reference_calibrated(torch.zeros(3), torch.zeros(4))


@pytest.mark.parity
def test_every_signal_auroc_equals_sklearn(model, tokenizer):
    texts = ["def add(a, b):\n    return a + b\n", "class Point:\n    x = 0\n", "import os\nprint(os.sep)\n",
             "# a comment about the code\n", "def sub(a, b):\n    return a - b\n", "y = [1, 2, 3]\n",
             "print('hello')\n", "def f():\n    pass\n"]
    ref = fit_reference(tokenizer, ["x = 1\nprint(x)\n", "def g(a):\n    return a\n"], tokenizer.vocab_size)
    scores = [membership_scores(text_token_stats(model, tokenizer, t), t,
                                ref.token_logprobs(text_ids(tokenizer, t, 32))) for t in texts]
    assert set(scores[0]) == {"loss", "Min-20%", "zlib ratio", "Min-20%++", "reference"}
    labels = [1, 0, 1, 0, 1, 0, 1, 0]
    for name in scores[0]:
        s = [d[name] for d in scores]
        ours = auroc([x for x, y in zip(s, labels) if y], [x for x, y in zip(s, labels) if not y])
        assert ours == pytest.approx(roc_auc_score(labels, s)), name


@pytest.mark.parity
def test_auroc_interval_agrees_with_scipy_bootstrap():
    from scipy.stats import bootstrap

    rng = np.random.default_rng(1)
    pos, neg = rng.normal(0.6, 1, 30), rng.normal(0, 1, 25)
    ours = auroc_interval(pos, neg, n_resamples=4000, confidence=0.9, rng=0)
    assert ours.estimate == pytest.approx(roc_auc_score([1] * 30 + [0] * 25, np.r_[pos, neg]))
    theirs = bootstrap((pos, neg), lambda p, n: auroc(list(p), list(n)), vectorized=False, paired=False,
                       n_resamples=4000, confidence_level=0.9, method="percentile", random_state=0)
    assert ours.low == pytest.approx(theirs.confidence_interval.low, abs=0.02)
    assert ours.high == pytest.approx(theirs.confidence_interval.high, abs=0.02)
    assert ours.low < ours.estimate < ours.high
    with pytest.raises(ValueError):
        auroc_interval([1.0], [0.0, 1.0])
