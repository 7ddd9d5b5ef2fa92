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
Taught in chapter 02 (solutions/02_gpt).
"""

from __future__ import annotations

import torch
from torch import nn

ROPE_LAYOUTS = ("half", "interleaved")


def rope_frequencies(d_head: int, base: float = 10000.0) -> torch.Tensor:
    """theta_i = base^(-2i/d_head), i = 0..d_head/2-1.  -> (d_head/2,) fp32."""
    if d_head % 2:
        raise ValueError(f"RoPE needs an even head dimension, got d_head={d_head}")
    return 1.0 / base ** (torch.arange(0, d_head, 2, dtype=torch.float32) / d_head)


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
        self, d_head: int, base: float = 10000.0, layout: str = "half", max_seq_len: int = 2048
    ) -> None:
        super().__init__()
        if layout not in ROPE_LAYOUTS:
            raise ValueError(f"unknown RoPE layout {layout!r}; expected one of {ROPE_LAYOUTS}")
        self.d_head, self.base, self.layout = d_head, base, layout
        inv_freq = rope_frequencies(d_head, base)
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
