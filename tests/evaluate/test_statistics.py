"""Bootstrap intervals (parity with scipy on the same resamples), McNemar, sample sizes."""

from __future__ import annotations

import numpy as np
import pytest

from llmlab.evaluate import bootstrap_ci, items_needed, mcnemar_exact, paired_bootstrap


@pytest.mark.parity
@pytest.mark.parametrize("method", ["percentile", "BCa"])
def test_bootstrap_equals_scipy_on_the_same_resamples(method):
    stats = pytest.importorskip("scipy.stats")
    x = np.random.default_rng(1).binomial(1, 0.6, 120).astype(float)
    ours = bootstrap_ci(x, n_resamples=2000, method=method, rng=np.random.default_rng(7))
    theirs = stats.bootstrap((x,), np.mean, n_resamples=2000, method=method, vectorized=False,
                             random_state=np.random.default_rng(7))
    assert ours.low == pytest.approx(theirs.confidence_interval.low, abs=1e-12)
    assert ours.high == pytest.approx(theirs.confidence_interval.high, abs=1e-12)


@pytest.mark.parity
def test_mcnemar_equals_scipy_binomial_test():
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    a, b = rng.binomial(1, 0.6, 200), rng.binomial(1, 0.5, 200)
    n01, n10 = int(((a == 1) & (b == 0)).sum()), int(((a == 0) & (b == 1)).sum())
    assert mcnemar_exact(a, b) == pytest.approx(stats.binomtest(n01, n01 + n10, 0.5).pvalue)


def test_interval_covers_and_narrows():
    x = np.random.default_rng(0).binomial(1, 0.7, 400)
    ci = bootstrap_ci(x, n_resamples=1000)
    assert ci.low < x.mean() < ci.high and ci.estimate == pytest.approx(x.mean())
    wide = bootstrap_ci(x[:50], n_resamples=1000)
    assert wide.high - wide.low > ci.high - ci.low
    with pytest.raises(ValueError):
        bootstrap_ci([1.0])
    with pytest.raises(ValueError):
        bootstrap_ci(x, method="normal")


def test_pairing_shrinks_the_interval():
    rng = np.random.default_rng(0)
    hard = rng.binomial(1, 0.5, 300)           # item difficulty both models share
    a = np.where(rng.random(300) < 0.9, hard, 1 - hard)
    b = np.where(rng.random(300) < 0.85, hard, 1 - hard)
    paired = paired_bootstrap(a, b, n_resamples=1000)
    ia, ib = bootstrap_ci(a, n_resamples=1000), bootstrap_ci(b, n_resamples=1000)
    assert paired.high - paired.low < (ia.high - ia.low) + (ib.high - ib.low)
    with pytest.raises(ValueError):
        paired_bootstrap(a, b[:-1])


def test_items_needed():
    assert items_needed(0.05, 0.5) == 785  # (1.96 + 0.8416)^2 * 100
    assert items_needed(0.1, 0.5) < items_needed(0.05, 0.5)
    with pytest.raises(ValueError):
        items_needed(0.0, 0.5)
    assert mcnemar_exact([1, 0, 1], [1, 0, 1]) == 1.0
