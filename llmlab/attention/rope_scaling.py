"""Stretching RoPE past its training length: position interpolation, NTK-aware scaling, YaRN.

A model trained on ``original_max_len`` positions has never seen the rotation angles of later
positions. Each method changes the frequencies ``theta_i`` of ``llmlab.nn``'s RoPE so that a
``factor`` times longer context maps onto angles the model knows:

- **PI** — "Extending Context Window of Large Language Models via Positional Interpolation"
  (Chen et al., arXiv 2306.15595): divide every frequency by ``factor`` (positions m -> m/s).
- **NTK-aware** — (bloc97, 2023; analysed in the YaRN paper): raise the base to
  ``base * factor^(d/(d-2))``, which leaves the fastest frequencies almost untouched and
  interpolates the slowest by ``factor``.
- **YaRN** — "YaRN: Efficient Context Window Extension of Large Language Models"
  (Peng et al., arXiv 2309.00071): "NTK-by-parts" — keep dimensions that rotate more than
  ``beta_fast`` times over the original context, interpolate those rotating less than
  ``beta_slow`` times, ramp linearly between — plus an attention temperature: cos/sin are scaled
  by ``0.1 ln(factor) + 1``.

Matches Hugging Face ``ROPE_INIT_FUNCTIONS`` ("linear", "dynamic" at its full length, "yarn").
Taught in chapter 03 (solutions/03_attention).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from llmlab.nn.rope import RotaryEmbedding, rope_cos_sin, rope_frequencies
from llmlab.utils import reject_unknown_keys

ROPE_SCALINGS = ("none", "pi", "ntk", "yarn")


@reject_unknown_keys
@dataclass(frozen=True)
class RopeScaling:
    """How to stretch RoPE: ``kind`` in ``ROPE_SCALINGS``, ``factor`` = new length / original."""

    kind: str = "none"
    factor: float = 1.0
    original_max_len: int = 2048
    beta_fast: float = 32.0  # YaRN: dims rotating more often than this are extrapolated
    beta_slow: float = 1.0  # YaRN: dims rotating less often than this are interpolated

    def __post_init__(self) -> None:
        if self.kind not in ROPE_SCALINGS:
            raise ValueError(f"unknown RoPE scaling {self.kind!r}; expected one of {ROPE_SCALINGS}")
        if self.factor < 1.0:
            raise ValueError(f"factor must be >= 1, got {self.factor}")


def yarn_ramp(d_head: int, base: float, original_max_len: int, beta_fast: float,
              beta_slow: float) -> torch.Tensor:
    """YaRN's per-dimension interpolation weight gamma_i in [0, 1], (d_head/2,) fp32.

    0 = keep the original frequency (fast dims), 1 = divide it by the factor (slow dims). The
    dimension that rotates ``r`` times over ``L`` tokens is ``d ln(L / (2 pi r)) / (2 ln base)``.
    """
    def dim_of(rotations: float) -> float:
        turns = original_max_len / (rotations * 2 * math.pi)
        return d_head * math.log(turns) / (2 * math.log(base))

    low = max(math.floor(dim_of(beta_fast)), 0)
    high = min(math.ceil(dim_of(beta_slow)), d_head - 1)
    high = high + 0.001 if high == low else high
    return ((torch.arange(d_head // 2, dtype=torch.float32) - low) / (high - low)).clamp(0, 1)


def scaled_frequencies(d_head: int, base: float, scaling: RopeScaling
                       ) -> tuple[torch.Tensor, float]:
    """Frequencies after scaling, (d_head/2,) fp32, and the factor to multiply cos/sin by."""
    inv_freq = rope_frequencies(d_head, base)
    s = scaling.factor
    if scaling.kind == "none":
        return inv_freq, 1.0
    if scaling.kind == "pi":
        return inv_freq / s, 1.0
    if scaling.kind == "ntk":
        return rope_frequencies(d_head, base * s ** (d_head / (d_head - 2))), 1.0
    gamma = yarn_ramp(d_head, base, scaling.original_max_len, scaling.beta_fast, scaling.beta_slow)
    inv_freq = inv_freq / s * gamma + inv_freq * (1 - gamma)
    return inv_freq, (0.1 * math.log(s) + 1.0) if s > 1 else 1.0


class ScaledRotaryEmbedding(RotaryEmbedding):
    """``llmlab.nn``'s RoPE with scaled frequencies and YaRN's cos/sin factor.

    forward(positions: (batch, seq)) -> (cos, sin), each (batch, seq, d_head/2).
    """

    def __init__(self, d_head: int, base: float = 10000.0, layout: str = "half",
                 max_seq_len: int = 2048, scaling: RopeScaling | None = None) -> None:
        super().__init__(d_head, base, layout, max_seq_len)
        self.scaling = scaling or RopeScaling()
        inv_freq, self.attention_factor = scaled_frequencies(d_head, base, self.scaling)
        cos, sin = rope_cos_sin(torch.arange(max_seq_len), inv_freq)
        self.inv_freq, self.cos_table, self.sin_table = inv_freq, cos, sin

    def forward(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        cos, sin = super().forward(positions)
        return cos * self.attention_factor, sin * self.attention_factor


def set_rope_scaling(model: nn.Module, scaling: RopeScaling, max_seq_len: int | None = None
                     ) -> nn.Module:
    """Swap every RoPE of ``model`` (attributes named ``rope``) for a scaled one, in place.

    Modules that shared one RoPE keep sharing its replacement. Returns ``model``; copy it first
    (``copy.deepcopy``) to keep the original.
    """
    replaced: dict[int, ScaledRotaryEmbedding] = {}
    for module in list(model.modules()):
        rope = getattr(module, "rope", None)
        if not isinstance(rope, RotaryEmbedding):
            continue
        if id(rope) not in replaced:
            new = ScaledRotaryEmbedding(rope.d_head, rope.base, rope.layout,
                                        max_seq_len or rope.cos_table.shape[0], scaling)
            replaced[id(rope)] = new.to(rope.inv_freq.device)
        module.rope = replaced[id(rope)]
    if not replaced:
        raise ValueError("the model has no RotaryEmbedding under an attribute named `rope`")
    return model
