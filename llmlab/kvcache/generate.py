"""Autoregressive generation: uncached, with any KV cache, and over a paged cache.

Chapter 02's :func:`llmlab.model.generate.generate` is the plain loop that re-reads the whole
window every step; this module adds the cache. Greedy decoding with a cache must produce exactly
the tokens of decoding without one (the cache only avoids recomputing keys and values that cannot
change), and the tests check this against Hugging Face ``transformers`` ``generate`` on the same
weights. Rows may be prompts of different lengths: :func:`generate` takes them left-padded with
an ``attention_mask`` (as ``transformers`` does); :func:`generate_paged` takes a list of token
lists and stores no padding at all.
Taught in chapter 08 (solutions/08_kvcache).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence

import torch
from torch import nn
from tqdm.auto import tqdm

from llmlab.kvcache.base import KVCache, NoCache
from llmlab.kvcache.contiguous import ContiguousKVCache
from llmlab.kvcache.paged import PagedKVCache
from llmlab.model.generate import filter_logits, sample_from

Sampler = Callable[[torch.Tensor], torch.Tensor]


def make_sampler(do_sample: bool = False, temperature: float = 1.0, top_k: int | None = None,
                 top_p: float | None = None,
                 generator: torch.Generator | None = None) -> Sampler:
    """logits (batch, vocab) -> next token ids (batch,): argmax, or a filtered sample.

    The filtering (top-k, nucleus) is chapter 02's :func:`llmlab.model.generate.filter_logits`.
    """
    if not do_sample:
        return lambda logits: logits.argmax(-1)
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0 when sampling, got {temperature}")

    def sample(logits: torch.Tensor) -> torch.Tensor:
        probs = torch.softmax(filter_logits(logits.float() / temperature, top_k, top_p), -1)
        return sample_from(probs, generator)[:, 0]

    return sample


def decode_loop(first_logits: torch.Tensor, step: Callable[[torch.Tensor], torch.Tensor],
                max_new_tokens: int, sampler: Sampler, eos_token_id: int | None = None,
                pad_token_id: int = 0, progress: bool = False) -> torch.Tensor:
    """Sample, feed back, repeat. first_logits: (batch, vocab); step: tokens (batch,) -> logits.

    Returns (batch, n) new tokens, n <= max_new_tokens (stops once every row emitted EOS; a row
    that finished gets ``pad_token_id`` afterwards, as ``transformers`` does).
    """
    logits, out = first_logits, []
    done = torch.zeros(first_logits.shape[0], dtype=torch.bool, device=first_logits.device)
    for i in tqdm(range(max_new_tokens), disable=not progress, desc="decode", leave=False):
        tok = sampler(logits)
        if eos_token_id is not None:
            tok = torch.where(done, pad_token_id, tok)
            done |= tok == eos_token_id
        out.append(tok)
        if i + 1 == max_new_tokens or bool(done.all()):
            break
        logits = step(tok)
    return torch.stack(out, 1)


def _left_pad_positions(valid: torch.Tensor) -> torch.Tensor:
    """(batch, T) bool -> (batch, T) positions counting only real tokens (padding gets 0)."""
    return (valid.long().cumsum(-1) - 1).clamp(min=0)


@torch.no_grad()
def generate(model: nn.Module, idx: torch.Tensor, max_new_tokens: int, *,
             attention_mask: torch.Tensor | None = None, use_cache: bool = True,
             cache: KVCache | None = None, do_sample: bool = False, temperature: float = 1.0,
             top_k: int | None = None, top_p: float | None = None,
             generator: torch.Generator | None = None, eos_token_id: int | None = None,
             pad_token_id: int = 0, progress: bool = False) -> torch.Tensor:
    """Prefill the prompt, then decode one token at a time.

    idx: (batch, T) prompt ids, left-padded when ``attention_mask`` (batch, T; 1 = real) is given.
    ``use_cache=False`` recomputes the whole sequence every step (the baseline). ``cache`` may be
    any :class:`KVCache` (default: a :class:`ContiguousKVCache`). Returns (batch, T + n).
    """
    if idx.dim() != 2:
        raise ValueError(f"idx must be (batch, T) token ids, got {tuple(idx.shape)}")
    if attention_mask is not None and attention_mask.shape != idx.shape:
        raise ValueError(f"attention_mask {tuple(attention_mask.shape)} must match idx "
                         f"{tuple(idx.shape)}")
    valid = (torch.ones_like(idx, dtype=torch.bool) if attention_mask is None
             else attention_mask.bool())
    padded = not bool(valid.all())
    positions = _left_pad_positions(valid)  # (batch, T)
    sampler = make_sampler(do_sample, temperature, top_k, top_p, generator)
    state = {"seq": idx, "valid": valid, "pos": positions}

    if padded and cache is not None and getattr(cache, "key_valid", None) is None:
        raise ValueError("a left-padded batch needs a cache that masks the padding: pass "
                         "ContiguousKVCache(n_layer, key_valid=attention_mask.bool()) or no cache")
    if use_cache:
        n_layer = model.config.n_layer
        cache = cache if cache is not None else ContiguousKVCache(
            n_layer, idx.shape[1] + max_new_tokens, valid if padded else None)
        first = model(idx, positions, cache)[:, -1]

        def step(tok: torch.Tensor) -> torch.Tensor:
            state["pos"] = state["pos"][:, -1:] + 1  # (batch, 1)
            return model(tok[:, None], state["pos"], cache)[:, -1]
    else:
        first = model(idx, positions, NoCache(valid) if padded else None)[:, -1]

        def step(tok: torch.Tensor) -> torch.Tensor:
            state["seq"] = torch.cat([state["seq"], tok[:, None]], 1)
            state["valid"] = torch.cat([state["valid"], state["valid"][:, -1:] | True], 1)
            state["pos"] = torch.cat([state["pos"], state["pos"][:, -1:] + 1], 1)
            mask_cache = NoCache(state["valid"]) if padded else None
            return model(state["seq"], state["pos"], mask_cache)[:, -1]

    new = decode_loop(first, step, max_new_tokens, sampler, eos_token_id, pad_token_id, progress)
    return torch.cat([idx, new], 1)


@torch.no_grad()
def generate_paged(model: nn.Module, prompts: Sequence[Sequence[int]], max_new_tokens: int,
                   cache: PagedKVCache, *, seq_ids: Sequence[Hashable] | None = None,
                   free: bool = True, do_sample: bool = False, temperature: float = 1.0,
                   top_k: int | None = None, top_p: float | None = None,
                   generator: torch.Generator | None = None, eos_token_id: int | None = None,
                   pad_token_id: int = 0, progress: bool = False) -> list[list[int]]:
    """Generate for prompts of different lengths over a paged cache; returns the new tokens.

    Prompt prefixes already in the prefix cache are not recomputed. With ``free`` the sequences
    are freed at the end (their full blocks stay in the prefix cache when it is enabled).
    """
    device = next(model.parameters()).device
    seq_ids = list(range(len(prompts))) if seq_ids is None else list(seq_ids)
    cached = [cache.add_sequence(s, list(p)) for s, p in zip(seq_ids, prompts)]
    cache.set_batch(seq_ids)
    rest = [list(p[c:]) for p, c in zip(prompts, cached)]
    cache.prepare(tokens=rest, device=device)
    width = max(map(len, rest))
    x = torch.tensor([r + [pad_token_id] * (width - len(r)) for r in rest], device=device)
    logits = model(x, cache.positions(), cache)  # (batch, width, vocab)
    last = torch.tensor([len(r) - 1 for r in rest], device=device)
    first = logits[torch.arange(len(rest), device=device), last]

    def step(tok: torch.Tensor) -> torch.Tensor:
        cache.prepare(tokens=[[t] for t in tok.tolist()], device=device)
        return model(tok[:, None], cache.positions(), cache)[:, -1]

    sampler = make_sampler(do_sample, temperature, top_k, top_p, generator)
    new = decode_loop(first, step, max_new_tokens, sampler, eos_token_id, pad_token_id, progress)
    if free:
        for s in seq_ids:
            cache.free(s)
    return new.tolist()
