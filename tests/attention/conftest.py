"""Fixtures shared by the attention tests: seeded random q, k, v in float64."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture
def qkv():
    """make(batch, heads, seq_q, d, seq_k=None, kv_heads=None, d_v=None) -> leaf q, k, v (fp64)."""
    gen = torch.Generator().manual_seed(0)

    def make(batch=2, heads=4, seq_q=24, d=16, seq_k=None, kv_heads=None, d_v=None):
        seq_k, kv_heads, d_v = seq_k or seq_q, kv_heads or heads, d_v or d
        shapes = [(batch, heads, seq_q, d), (batch, kv_heads, seq_k, d),
                  (batch, kv_heads, seq_k, d_v)]
        return [torch.randn(*s, generator=gen, dtype=torch.float64).requires_grad_()
                for s in shapes]

    return make


def grads(out: torch.Tensor, inputs, seed: int = 1):
    """Gradients of <out, g> for a fixed random g (a stronger test than out.sum())."""
    g = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed), dtype=out.dtype)
    return torch.autograd.grad(out, inputs, g, allow_unused=True)


def assert_same(a, b, atol=1e-10, rtol=1e-8):
    """Outputs (tensors or sequences of tensors) agree."""
    if isinstance(a, torch.Tensor):
        a, b = [a], [b]
    assert len(a) == len(b)
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y, atol=atol, rtol=rtol)
