"""Chapter 02 (solutions/02_gpt): known wrong answers its checks name.

Each is one plausible slip in an otherwise right answer (see :mod:`llmlab_book.catalogue`).
"""

from __future__ import annotations

import dataclasses
import math

import torch

from llmlab.nn import apply_rope
from llmlab.train import accumulated_step


def rms_norm_eps_outside(x, weight, eps=1e-6):
    """eps added to the root instead of inside it."""
    return x / (x.pow(2).mean(-1, keepdim=True).sqrt() + eps) * weight


def layer_norm_without_bias(x, weight, eps=1e-6):
    """Subtracting the mean: LayerNorm, not RMSNorm."""
    centred = x - x.mean(-1, keepdim=True)
    return centred * torch.rsqrt(x.var(-1, keepdim=True, unbiased=False) + eps) * weight


def rope_interleaved(x, cos, sin):
    """The paper's pairs (2i, 2i+1) where the half layout (i, i + d/2) was asked."""
    cos, sin = cos.unsqueeze(2).to(x.dtype), sin.unsqueeze(2).to(x.dtype)
    x1, x2 = x[..., 0::2], x[..., 1::2]
    return torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), -1).flatten(-2)


def rope_backwards(x, cos, sin):
    """Rotating by minus the angle (the sign of sin flipped)."""
    return apply_rope(x, cos, -sin)


def causal_attention_variant(scale: bool = True, diagonal: int = 1, interleave: bool = True):
    """Causal GQA attention with one slip: no 1/sqrt(d), a mask off by one, or ``repeat``."""
    def variant(q, k, v):
        group = q.shape[1] // k.shape[1]
        k, v = ((t.repeat_interleave(group, 1) if interleave else t.repeat(1, group, 1, 1))
                for t in (k, v))
        scores = q @ k.transpose(-2, -1) / (math.sqrt(q.shape[-1]) if scale else 1.0)
        t = q.shape[2]
        hidden = torch.triu(torch.ones(t, t, dtype=torch.bool, device=q.device), diagonal)
        return torch.softmax(scores.masked_fill(hidden, float("-inf")), -1).nan_to_num(0.0) @ v
    return variant


ATTENTION = {
    "attention without the 1/sqrt(d_head) scale": causal_attention_variant(scale=False),
    "an off-by-one mask that hides the diagonal": causal_attention_variant(diagonal=0),
    "an off-by-one mask that shows the next token": causal_attention_variant(diagonal=2),
    "`repeat` instead of `repeat_interleave` for the KV heads": causal_attention_variant(interleave=False),
}


def gpt_forward_without_final_norm(model, idx, ctx=None):
    """Blocks straight into the LM head, skipping ``norm_f``."""
    norm_f = model.norm_f
    model.norm_f = torch.nn.Identity()
    try:
        return model(idx, ctx)
    finally:
        model.norm_f = norm_f


def gpt_forward_ignoring_logits_at(model, idx, ctx=None):
    """Every column's logits even when the context asks for one column per row."""
    if ctx is None or ctx.logits_at is None:
        return model(idx, ctx)
    return model(idx, dataclasses.replace(ctx, logits_at=None))


def _clip_each_tensor(params, max_norm):
    grads = [p.grad for p in params if p.grad is not None]
    total = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
    for g in grads:
        g.mul_(min(1.0, max_norm / (float(g.norm()) + 1e-6)))
    return total


def step_without_dividing(model, optimizer, batches, loss_fn, max_norm=1.0):
    """Accumulating the micro-batch losses without dividing by their number."""
    return accumulated_step(model, optimizer, batches, lambda z, y: loss_fn(z, y) * len(batches), max_norm)


def step_clipping_each_tensor(model, optimizer, batches, loss_fn, max_norm=1.0):
    """Clipping every parameter's gradient on its own instead of the global norm."""
    return accumulated_step(model, optimizer, batches, loss_fn, max_norm, clip=_clip_each_tensor)


@torch.no_grad()
def generate_top_p_off_by_one(model, idx, n, temperature=1.0, top_k=0, top_p=1.0, generator=None):
    """Top-p that also drops the token whose probability carries the mass past p."""
    for _ in range(n):
        logits = model(idx[:, -model.config.block_size:])[:, -1].float()
        if temperature == 0:
            idx = torch.cat((idx, logits.argmax(-1, keepdim=True)), 1)
            continue
        logits = logits / temperature
        if top_k > 0:
            kth = torch.topk(logits, min(top_k, logits.shape[-1]), -1).values[:, -1:]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        if top_p < 1.0:
            probs, order = torch.sort(torch.softmax(logits, -1), -1, descending=True)
            drop = probs.cumsum(-1) > top_p
            logits = logits.masked_fill(drop.scatter(-1, order, drop), float("-inf"))
        nxt = torch.multinomial(torch.softmax(logits, -1), 1, generator=generator)
        idx = torch.cat((idx, nxt), 1)
    return idx
