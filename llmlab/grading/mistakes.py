"""Known wrong variants of the book's exercises, so a check can name the mistake it sees.

``check_function(..., mistakes={"label": variant})`` runs each variant on the failing case and,
when the learner's output equals one, says so ("Your result is exactly what an off-by-one mask
gives."). Each variant here is one plausible slip in an otherwise right answer — they live in the
courseware, not in the chapters' check cells, so a visible check cell never shows a near-solution.
Used by chapters 01, 02, 03 and 08.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import torch

from llmlab.attention.rope_scaling import RopeScaling, scaled_frequencies, yarn_ramp
from llmlab.kvcache import ContiguousKVCache
from llmlab.nn import apply_rope, rope_frequencies
from llmlab.tokenizer.chat import IM_END, render_chatml
from llmlab.train import accumulated_step

# ------------------------------------------------------------------ chapter 01: the assistant mask


def _mask_from_byte_spans(tok, messages, spans_of: Callable) -> tuple[list[int], list[int]]:
    text, spans = render_chatml(messages)
    ids, mask, pos = tok.encode(text), [], 0
    spans = spans_of(text, spans)
    for i in ids:
        mask.append(int(any(a <= pos < b for a, b in spans)))
        pos += len(tok.vocab[i])
    return ids, mask


def _byte(text: str, char: int) -> int:
    return len(text[:char].encode("utf-8"))


def mask_with_character_spans(tok, messages):
    """Character offsets used as if they were byte offsets."""
    return _mask_from_byte_spans(tok, messages, lambda text, spans: spans)


def mask_without_im_end(tok, messages):
    """The assistant's reply marked, but not the ``<|im_end|>`` that closes it."""
    return _mask_from_byte_spans(tok, messages, lambda text, spans: [
        (_byte(text, a), _byte(text, b) - len(IM_END)) for a, b in spans])


# ------------------------------------------------------------------ chapter 02: the model


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


# ------------------------------------------------------------------ chapter 08: the cached decode


def _greedy_cached(model, idx, max_new_tokens, cache, eos_token_id, pad_token_id, commit=True):
    """The cached greedy loop of exercise 8.4, with the cache (and the commits) given."""
    def forward(ids):
        ctx = cache.prepare(ids)
        logits = model(ids, ctx)[:, -1]
        if commit:
            cache.commit(ctx)
        return logits

    logits, out = forward(idx), []
    done = torch.zeros(idx.shape[0], dtype=torch.bool, device=idx.device)
    for i in range(max_new_tokens):
        tok = logits.argmax(-1)
        if eos_token_id is not None:
            tok = torch.where(done, pad_token_id, tok)
            done |= tok == eos_token_id
        out.append(tok)
        if i + 1 == max_new_tokens or bool(done.all()):
            break
        logits = forward(tok[:, None])
    return torch.cat([idx, torch.stack(out, 1)], 1)


@torch.no_grad()
def cached_generate_blind_to_padding(model, idx, max_new_tokens, attention_mask=None,
                                     eos_token_id=None, pad_token_id=0):
    """A cache built without ``key_valid``: positions count the left padding and every row
    attends to its padding tokens."""
    cache = ContiguousKVCache(model.config.n_layer, idx.shape[1] + max_new_tokens)
    return _greedy_cached(model, idx, max_new_tokens, cache, eos_token_id, pad_token_id)


@torch.no_grad()
def cached_generate_without_commit(model, idx, max_new_tokens, attention_mask=None,
                                   eos_token_id=None, pad_token_id=0):
    """Steps never committed: every step starts again from an empty cache."""
    valid = torch.ones_like(idx, dtype=torch.bool) if attention_mask is None else attention_mask.bool()
    cache = ContiguousKVCache(model.config.n_layer, idx.shape[1] + max_new_tokens,
                              None if bool(valid.all()) else valid)
    return _greedy_cached(model, idx, max_new_tokens, cache, eos_token_id, pad_token_id,
                          commit=False)


# ------------------------------------------------------------------ chapter 03: backward, YaRN


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
