"""Model FLOPs utilisation: achieved training FLOP/s over the machine's peak.

MFU = tokens/s × FLOPs per token / peak FLOP/s (Chowdhery et al., "PaLM", arXiv:2204.02311,
appendix B). A datasheet peak means little on a shared 2-core CPU, so the peak here is
*measured*: the best of a few large square matmuls in the training dtype.
Taught in chapter 02 (solutions/02_gpt).
"""

from __future__ import annotations

import time

import torch


def measure_matmul_peak(dtype: torch.dtype = torch.bfloat16, n: int = 1024, repeats: int = 5,
                        device: str | torch.device = "cpu") -> float:
    """Best FLOP/s of an (n×n)@(n×n) matmul in ``dtype`` on ``device`` over ``repeats`` timed
    runs (after a warm-up)."""
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    sync = torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)
    a @ b  # warm-up: thread pool, kernel selection
    sync()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        sync()
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best


def mfu(tokens_per_second: float, flops_per_token: float, peak_flops: float) -> float:
    """Fraction (0..1) of the peak the model's useful FLOPs reach."""
    return tokens_per_second * flops_per_token / peak_flops
