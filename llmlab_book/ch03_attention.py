"""Chapter 03 (solutions/03_attention): known wrong answers its checks name.

See :mod:`llmlab_book.catalogue` for the format.
"""

from __future__ import annotations

import math

import torch

from llmlab.attention.rope_scaling import RopeScaling, scaled_frequencies, yarn_ramp
from llmlab.nn import rope_frequencies


def attention_backward_without_delta(do, q, k, v, o, lse, causal=False, scale=None, block_q=32,
                                     block_k=32):
    """dS = P ∘ dP, forgetting to subtract D = rowsum(dO ∘ O) (the softmax's Jacobian term)."""
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    p = torch.exp((q @ k.transpose(-1, -2)) * scale - lse[..., None])
    if causal:
        offset = k.shape[-2] - q.shape[-2]
        keep = torch.ones(q.shape[-2], k.shape[-2], dtype=torch.bool).tril(offset)
        p = p.masked_fill(~keep, 0.0)
    ds = p * (do @ v.transpose(-1, -2))
    return ds @ k * scale, ds.transpose(-1, -2) @ q * scale, p.transpose(-1, -2) @ do


def yarn_ramp_reversed(d_head, base, factor, original_max_len, beta_fast=32.0, beta_slow=1.0):
    """YaRN with the ramp the wrong way round: the fast dimensions interpolated, the slow kept."""
    inv = rope_frequencies(d_head, base)
    gamma = 1 - yarn_ramp(d_head, base, original_max_len, beta_fast, beta_slow)
    return inv / factor * gamma + inv * (1 - gamma), 0.1 * math.log(factor) + 1.0


def yarn_without_temperature(d_head, base, factor, original_max_len, beta_fast=32.0, beta_slow=1.0):
    """YaRN's frequencies with the attention factor left at 1."""
    inv, _ = scaled_frequencies(d_head, base, RopeScaling("yarn", factor, original_max_len,
                                                          beta_fast, beta_slow))
    return inv, 1.0
