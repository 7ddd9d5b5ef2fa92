"""Rotations that remove outliers: randomized Hadamard transforms (QuaRot-style).

"QuaRot: Outlier-Free 4-Bit Inference in Rotated LLMs" (Ashkboos et al., arXiv 2404.00456);
"SpinQuant" (Liu et al., arXiv 2405.16406) learns the rotation instead. For an orthogonal Q,
``X W^T = (X Q)(W Q)^T``. A Hadamard matrix (entries ±1/sqrt(n)) spreads every input channel over
all output channels, so one outlier channel of size ``a`` becomes n channels of size
``a / sqrt(n)``: activations become near-Gaussian (kurtosis → 3) and quantize with small error,
and the weights are rotated once offline. QuaRot fuses the rotation of the residual stream into the
weights; here it is applied per layer (``x Q`` online, ``W Q`` offline), which shows the same effect.
Taught in chapter 07 (solutions/07_quant).
"""

from __future__ import annotations

import torch


def hadamard_matrix(n: int) -> torch.Tensor:
    """Sylvester's construction, normalized: (n, n) float32 with H H^T = I. n a power of two."""
    if n < 1 or n & (n - 1):
        raise ValueError(f"a Sylvester Hadamard matrix needs a power of two, got {n}")
    h = torch.ones(1, 1)
    while h.shape[0] < n:
        h = torch.cat([torch.cat([h, h], 1), torch.cat([h, -h], 1)], 0)
    return h / h.shape[0] ** 0.5


def random_hadamard(n: int, seed: int = 0) -> torch.Tensor:
    """Orthogonal (n, n): a block-diagonal Hadamard (blocks of the largest power of two dividing
    n, so 192 = 3 x 64) times random signs ``diag(±1)``, as QuaRot randomizes it."""
    block = n & -n  # largest power of two dividing n
    h = torch.block_diag(*[hadamard_matrix(block)] * (n // block))
    signs = torch.randint(0, 2, (n,), generator=torch.Generator().manual_seed(seed)) * 2 - 1
    return signs.float().unsqueeze(1) * h  # diag(signs) @ H


def rotate(x: torch.Tensor, w: torch.Tensor, q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(x Q, W Q) for x: (..., k), W: (n, k), Q: (k, k): the product x W^T is unchanged."""
    return x @ q, w @ q
