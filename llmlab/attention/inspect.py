"""Read the attention probabilities out of a model, for plots and the attention-map explorer.

The model's attention layers use a fused kernel that never returns the probabilities, so this
records each ``CausalSelfAttention``'s input with a forward pre-hook and recomputes its queries
and keys (with RoPE) to form ``softmax(q k^T / sqrt(d))``. Taught in chapter 03
(solutions/03_attention).
"""

from __future__ import annotations

import torch
from torch import nn

from llmlab.attention.gqa import repeat_kv
from llmlab.attention.naive import attention_scores
from llmlab.nn.attention import CausalSelfAttention
from llmlab.nn.functional import softmax


def layer_attention(attn: CausalSelfAttention, x: torch.Tensor,
                    positions: torch.Tensor | None = None) -> torch.Tensor:
    """Causal attention probabilities of one layer: x (batch, seq, d_model) ->
    (batch, n_head, seq, seq)."""
    q, k, _ = attn.project(x, positions)
    k = repeat_kv(k.transpose(1, 2), attn.n_head // attn.n_kv_head)
    return softmax(attention_scores(q.transpose(1, 2), k, is_causal=True).float(), dim=-1)


@torch.no_grad()
def attention_maps(model: nn.Module, idx: torch.Tensor) -> list[torch.Tensor]:
    """Run ``model(idx)`` and return, for each attention layer in order, its probabilities
    (batch, n_head, seq, seq). idx: (batch, seq) token ids."""
    inputs: list[tuple[CausalSelfAttention, torch.Tensor, torch.Tensor | None]] = []

    def record(module, args, kwargs):
        ctx = args[1] if len(args) > 1 else kwargs.get("ctx")  # the step context, if any
        inputs.append((module, args[0], None if ctx is None else ctx.positions))

    layers = [m for m in model.modules() if isinstance(m, CausalSelfAttention)]
    if not layers:
        raise ValueError("the model has no CausalSelfAttention layers")
    handles = [m.register_forward_pre_hook(record, with_kwargs=True) for m in layers]
    try:
        model(idx)
    finally:
        for h in handles:
            h.remove()
    return [layer_attention(m, x, p) for m, x, p in inputs]
