"""pass@k: the probability that at least one of k sampled programs passes the tests.

Drawing exactly k samples per problem and counting successes gives a high-variance estimate.
Chen et al. ("Evaluating Large Language Models Trained on Code", arXiv:2107.03374, the HumanEval
paper) draw n >= k samples, count the c that pass, and use the unbiased estimator

    pass@k = E[ 1 - C(n - c, k) / C(n, k) ]

(the chance that a random k-subset of the n samples holds no passing one, subtracted from 1),
computed as a product so that large binomials never overflow. The plug-in ``1 - (1 - c/n)^k``
is biased: it treats the n samples as if they were drawn with replacement.
Taught in chapter 11 (solutions/11_eval).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k of one problem with ``n`` samples of which ``c`` pass (``k <= n``)."""
    if not (0 <= c <= n and 1 <= k <= n):
        raise ValueError(f"need 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def estimate_pass_at_k(num_samples: int | Sequence[int], num_correct: Sequence[int],
                       k: int) -> np.ndarray:
    """pass@k of each problem (HumanEval's ``estimate_pass_at_k`` signature)."""
    n = [num_samples] * len(num_correct) if isinstance(num_samples, int) else list(num_samples)
    if len(n) != len(num_correct):
        raise ValueError(f"{len(n)} sample counts for {len(num_correct)} problems")
    return np.array([pass_at_k(int(a), int(c), k) for a, c in zip(n, num_correct)])


__all__ = ["estimate_pass_at_k", "pass_at_k"]
