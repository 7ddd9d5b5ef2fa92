"""Rotary position embeddings (RoPE), in both layouts the industry uses.

Su et al., "RoFormer: Enhanced Transformer with Rotary Position Embedding", arXiv:2104.09864.
Each pair of channels (x_a, x_b) of a query or key at position m is rotated by the angle
m * theta_i, theta_i = base^(-2i/d) for i = 0..d/2-1, so q_m . k_n depends only on m - n.

Which channels form pair i is a layout choice:

- ``"interleaved"`` — pairs (x[2i], x[2i+1]), as written in the RoFormer paper and Meta's
  original Llama code;
- ``"half"`` — pairs (x[i], x[i + d/2]) ("rotate_half"), as in Hugging Face ``LlamaForCausalLM``,
  GPT-NeoX, Qwen2.

Both give the same model once the rows of W_q and W_k are permuted
(``interleaved_to_half_permutation``); that is how checkpoints are converted between them.
``scale_frequencies`` stretches theta for a longer context the way Llama 3.1 does (Grattafiori
et al., "The Llama 3 Herd of Models", arXiv:2407.21783, and Meta's ``apply_scaling``): low
frequencies (wavelength > original context / low_freq_factor) are divided by ``factor``, high
ones (wavelength < original context / high_freq_factor) are kept, and those between are
interpolated. Taught in chapter 02 (solutions/02_gpt).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

ROPE_LAYOUTS = ("half", "interleaved")


def rope_frequencies(d_head: int, base: float = 10000.0) -> torch.Tensor:
    """theta_i = base^(-2i/d_head), i = 0..d_head/2-1.  -> (d_head/2,) fp32."""
    if d_head % 2:
        raise ValueError(f"RoPE needs an even head dimension, got d_head={d_head}")
    return 1.0 / base ** (torch.arange(0, d_head, 2, dtype=torch.float32) / d_head)


LLAMA3_KEYS = ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings")


def check_rope_scaling(scaling: dict[str, Any]) -> None:
    """Raise ``ValueError`` unless ``scaling`` is empty (no scaling) or Llama 3.1's
    ``{"rope_type": "llama3", "factor", "low_freq_factor", "high_freq_factor",
    "original_max_position_embeddings"}``."""
    if not scaling:
        return
    kind = scaling.get("rope_type")
    if kind != "llama3":
        raise ValueError(f"rope_scaling type {kind!r} is not implemented (only 'llama3'; "
                         "linear, dynamic, yarn and longrope are not)")
    missing = [k for k in LLAMA3_KEYS if k not in scaling]
    unknown = sorted(set(scaling) - {"rope_type", *LLAMA3_KEYS})
    if missing or unknown:
        raise ValueError(f"llama3 rope_scaling needs exactly {LLAMA3_KEYS}; missing {missing}, "
                         f"unknown {unknown}")
    if not float(scaling["high_freq_factor"]) > float(scaling["low_freq_factor"]):
        raise ValueError("llama3 rope_scaling needs high_freq_factor > low_freq_factor, got "
                         f"{scaling['high_freq_factor']} and {scaling['low_freq_factor']}")


def scale_frequencies(inv_freq: torch.Tensor, scaling: dict[str, Any]) -> torch.Tensor:
    """theta (d_head/2,) after ``scaling`` (see ``check_rope_scaling``; empty: unchanged)."""
    check_rope_scaling(scaling)
    if not scaling:
        return inv_freq
    factor, low, high = (float(scaling[k]) for k in LLAMA3_KEYS[:3])
    context = float(scaling["original_max_position_embeddings"])
    wavelen = 2 * math.pi / inv_freq
    scaled = torch.where(wavelen > context / low, inv_freq / factor, inv_freq)
    smooth = (context / wavelen - low) / (high - low)  # 0 at the low edge, 1 at the high edge
    between = (wavelen >= context / high) & (wavelen <= context / low)
    return torch.where(between, (1 - smooth) * scaled / factor + smooth * scaled, scaled)


def rope_cos_sin(positions: torch.Tensor, inv_freq: torch.Tensor):
    """Angles m * theta_i.  positions: (...) int -> cos, sin: (..., d_head/2) fp32."""
    angles = positions.to(torch.float32).unsqueeze(-1) * inv_freq
    return angles.cos(), angles.sin()


def apply_rope(
    x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, layout: str = "half"
) -> torch.Tensor:
    """Rotate channel pairs of x by the angles whose cos/sin are given.

    x: (batch, seq, n_heads, d_head); cos, sin: (batch, seq, d_head/2) -> same shape as x.
    """
    if x.dim() != 4 or cos.shape != (*x.shape[:2], x.shape[-1] // 2):
        raise ValueError(
            f"apply_rope expects x (batch, seq, heads, d_head) and cos/sin (batch, seq, "
            f"d_head/2); got x {tuple(x.shape)}, cos {tuple(cos.shape)}"
        )
    cos, sin = cos.unsqueeze(2).to(x.dtype), sin.unsqueeze(2).to(x.dtype)  # broadcast heads
    if layout == "half":
        x1, x2 = x.chunk(2, dim=-1)
        return torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)
    if layout == "interleaved":
        x1, x2 = x[..., 0::2], x[..., 1::2]
        return torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1).flatten(-2)
    raise ValueError(f"unknown RoPE layout {layout!r}; expected one of {ROPE_LAYOUTS}")


def interleaved_to_half_permutation(d_head: int) -> torch.Tensor:
    """Index p with half[j] = interleaved[p[j]]: channels 0,2,4,…,1,3,5,….  -> (d_head,) long.

    Apply it to the rows of each head of W_q and W_k to move a checkpoint between layouts.
    """
    return torch.cat((torch.arange(0, d_head, 2), torch.arange(1, d_head, 2)))


class RotaryEmbedding(nn.Module):
    """Holds theta and a cos/sin table for positions < ``max_seq_len``; computes beyond it.

    ``forward(positions: (batch, seq)) -> (cos, sin)`` each (batch, seq, d_head/2) fp32;
    ``rotate(x, cos, sin)`` applies them to x: (batch, seq, heads, d_head).
    """

    def __init__(
        self, d_head: int, base: float = 10000.0, layout: str = "half", max_seq_len: int = 2048,
        scaling: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if layout not in ROPE_LAYOUTS:
            raise ValueError(f"unknown RoPE layout {layout!r}; expected one of {ROPE_LAYOUTS}")
        self.d_head, self.base, self.layout = d_head, base, layout
        inv_freq = scale_frequencies(rope_frequencies(d_head, base), scaling or {})
        cos, sin = rope_cos_sin(torch.arange(max_seq_len), inv_freq)
        # Not in the state dict: derived from (d_head, base), so checkpoints stay portable.
        self.register_buffer("inv_freq", inv_freq, persistent=False)
        self.register_buffer("cos_table", cos, persistent=False)  # (max_seq_len, d_head/2)
        self.register_buffer("sin_table", sin, persistent=False)

    def forward(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if torch.compiler.is_compiling():  # no data-dependent branch in a graph: compute
            return rope_cos_sin(positions, self.inv_freq)
        if positions.numel() and int(positions.max()) < self.cos_table.shape[0]:
            return self.cos_table[positions], self.sin_table[positions]
        return rope_cos_sin(positions, self.inv_freq)

    def rotate(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        return apply_rope(x, cos, sin, self.layout)

    def extra_repr(self) -> str:
        return f"d_head={self.d_head}, base={self.base}, layout={self.layout!r}"
