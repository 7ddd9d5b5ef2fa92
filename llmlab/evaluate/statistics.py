"""Is a difference between two scores real? Confidence intervals, paired tests, sample sizes.

A benchmark score is a mean over a sample of items, so it has a standard error; two models
scored on the *same* items are compared on their per-item differences, whose variance is much
smaller than the sum of the two (Miller, "Adding Error Bars to Evals", arXiv:2411.00640).

- :func:`bootstrap_ci` — Efron's bootstrap: resample items with replacement, recompute the
  statistic, take percentiles (``"percentile"``) or bias-corrected and accelerated ones
  (``"BCa"``, Efron 1987). Given the same generator it draws the same resamples as
  ``scipy.stats.bootstrap`` and returns the same interval.
- :func:`paired_bootstrap` — the interval of the mean per-item difference of two models.
- :func:`mcnemar_exact` — McNemar's exact test for two 0/1 outcome vectors on the same items:
  only the discordant items (one right, the other wrong) carry information.
- :func:`items_needed` — how many items a paired comparison needs to detect a difference
  ``delta`` with a given power at significance ``alpha`` (normal approximation).
Taught in chapter 11 (solutions/11_eval).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

Statistic = Callable[[np.ndarray], float]


@dataclass(frozen=True)
class Interval:
    """A point estimate and its confidence interval."""

    estimate: float
    low: float
    high: float
    confidence: float

    def __str__(self) -> str:
        return f"{self.estimate:.3f} [{self.low:.3f}, {self.high:.3f}]"


def _mean(x: np.ndarray) -> float:
    return float(np.mean(x))


def resample_indices(n: int, n_resamples: int, rng: np.random.Generator) -> np.ndarray:
    """(n_resamples, n) indices drawn with replacement: the draw ``scipy.stats.bootstrap`` makes."""
    return rng.integers(0, n, (n_resamples, n))


def bootstrap_ci(values: Sequence[float], statistic: Statistic = _mean, n_resamples: int = 9999,
                 confidence: float = 0.95, method: str = "percentile",
                 rng: np.random.Generator | int | None = 0) -> Interval:
    """Bootstrap interval of ``statistic(values)`` (a statistic of a 1-D array)."""
    x = np.asarray(values, dtype=float)
    if x.ndim != 1 or len(x) < 2:
        raise ValueError(f"values must be 1-D with at least 2 items, got shape {x.shape}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    theta = np.array([statistic(x[i]) for i in resample_indices(len(x), n_resamples, rng)])
    alpha = (1 - confidence) / 2
    if method == "percentile":
        lo, hi = alpha, 1 - alpha
    elif method == "BCa":
        lo, hi = _bca_levels(x, statistic, theta, alpha)
    else:
        raise ValueError(f"method must be 'percentile' or 'BCa', got {method!r}")
    return Interval(statistic(x), float(np.percentile(theta, lo * 100)),
                    float(np.percentile(theta, hi * 100)), confidence)


def _bca_levels(x: np.ndarray, statistic: Statistic, theta: np.ndarray,
                alpha: float) -> tuple[float, float]:
    """Percentile levels of the BCa interval: bias correction z0 and acceleration a."""
    nd = NormalDist()
    below = float(np.mean(theta < statistic(x)) + np.mean(theta <= statistic(x))) / 2  # ties: half
    z0 = nd.inv_cdf(below)
    jack = np.array([statistic(np.delete(x, i)) for i in range(len(x))])
    d = jack.mean() - jack
    a = float((d ** 3).sum() / (6 * (d ** 2).sum() ** 1.5)) if (d ** 2).sum() > 0 else 0.0
    levels = []
    for q in (alpha, 1 - alpha):
        z = z0 + nd.inv_cdf(q)
        levels.append(nd.cdf(z0 + z / (1 - a * z)))
    return levels[0], levels[1]


def paired_bootstrap(a: Sequence[float], b: Sequence[float], **kwargs) -> Interval:
    """Interval of mean(a - b) over items scored by both models."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"paired scores need the same items, got {a.shape} and {b.shape}")
    return bootstrap_ci(a - b, **kwargs)


def mcnemar_exact(a: Sequence[int], b: Sequence[int]) -> float:
    """Two-sided p-value of McNemar's exact test for paired 0/1 outcomes (a binomial test of
    the discordant items: ``a`` right and ``b`` wrong vs the reverse, against 1/2)."""
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape or not np.isin(a, (0, 1)).all() or not np.isin(b, (0, 1)).all():
        raise ValueError("mcnemar_exact needs two 0/1 vectors over the same items")
    n01, n10 = int(((a == 1) & (b == 0)).sum()), int(((a == 0) & (b == 1)).sum())
    n, k = n01 + n10, min(n01, n10)
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n
    return min(1.0, 2 * tail)


def items_needed(delta: float, sd_diff: float, alpha: float = 0.05, power: float = 0.8) -> int:
    """Items for a two-sided paired test at ``alpha`` to detect a mean difference ``delta`` with
    probability ``power``, when per-item differences have standard deviation ``sd_diff``:
    n = ((z_{1-alpha/2} + z_power) * sd_diff / delta)^2."""
    if delta == 0 or sd_diff <= 0:
        raise ValueError(f"need delta != 0 and sd_diff > 0, got {delta}, {sd_diff}")
    nd = NormalDist()
    z = nd.inv_cdf(1 - alpha / 2) + nd.inv_cdf(power)
    return math.ceil((z * sd_diff / abs(delta)) ** 2)


__all__ = ["Interval", "bootstrap_ci", "items_needed", "mcnemar_exact", "paired_bootstrap",
           "resample_indices"]
