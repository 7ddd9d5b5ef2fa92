"""``generate``: the one way llmlab decodes a model — prefill, then one token per step.

:func:`generate` prefills the prompt through a KV cache (a :class:`~llmlab.model.cache.ContiguousKVCache`
unless another cache is given) and then feeds back one token per step; every token is chosen by
the pipeline of :mod:`llmlab.model.sampling` from one :class:`SamplingParams`. With
``use_cache=False`` it re-reads the last ``block_size`` tokens every step instead: chapter 02's
loop, and the baseline a cache must equal token for token (greedy cached decoding reproduces
Hugging Face ``transformers``' ``generate``; ``tests/kvcache/test_generate.py``). Rows may be
prompts of different lengths, left-padded with an ``attention_mask`` as in ``transformers``.

:func:`decode_loop` is the loop itself (sample, stop, feed back); the paged generation of chapter
08 (:func:`llmlab.kvcache.generate_paged`) and prefix tuning (chapter 05) run it with their own
caches. Taught in chapter 02 (solutions/02_gpt) and chapter 08 (solutions/08_kvcache).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import torch
from torch import nn
from tqdm.auto import tqdm

from llmlab.model.cache import ContiguousKVCache
from llmlab.model.sampling import SamplingParams, make_generator, next_token, process_logits
from llmlab.nn.attention import padded_causal_mask
from llmlab.nn.context import StepContext

Step = Callable[[torch.Tensor], torch.Tensor]  # new tokens (batch,) -> next logits (batch, vocab)


def sampling_params(params: SamplingParams | None, overrides: dict) -> SamplingParams:
    """``params`` (default ``SamplingParams()``) with some fields replaced; an unknown name
    raises ``ValueError`` naming it."""
    if params is not None and not isinstance(params, SamplingParams):
        raise ValueError(f"params must be a SamplingParams, got {type(params).__name__} "
                         f"{params!r}; for a length write max_new_tokens={params!r}")
    params = params or SamplingParams()
    return dataclasses.replace(params, **overrides) if overrides else params  # checks the keys


def stop_token_ids(params: SamplingParams) -> list[int]:
    """The tokens that end a row: the end-of-sequence token (unless ignored) and the stop ids."""
    eos = [] if params.ignore_eos or params.eos_token_id is None else [params.eos_token_id]
    return eos + list(params.stop_token_ids)


def decode_loop(first_logits: torch.Tensor, step: Step, params: SamplingParams,
                generator: torch.Generator | None = None,
                prompts: Sequence[Sequence[int]] | None = None, pad_token_id: int = 0,
                progress: bool = False) -> torch.Tensor:
    """Choose a token per row, feed it back, repeat. first_logits: (batch, vocab).

    ``step(tokens (batch,))`` returns the next logits (batch, vocab); ``prompts`` (one token list
    per row) feed the repetition penalty; the draws use ``generator``, else one seeded with
    ``params.seed``. Returns (batch, n) new tokens, n <= max_new_tokens:
    the loop ends once every row emitted a stop token, and a row that finished gets
    ``pad_token_id`` afterwards (as ``transformers`` does). No forward runs whose logits would
    not be used.
    """
    logits, out = first_logits, []
    generator = generator if generator is not None else make_generator(params)
    stops = torch.tensor(stop_token_ids(params), device=first_logits.device, dtype=torch.long)
    done = torch.zeros(first_logits.shape[0], dtype=torch.bool, device=first_logits.device)
    for i in tqdm(range(params.max_new_tokens), disable=not progress, desc="decode", leave=False):
        outputs = torch.stack(out, 1).tolist() if out and params.uses_history else None
        tok = next_token(process_logits(logits, params, prompts, outputs), params, generator)
        if stops.numel():
            tok = torch.where(done, pad_token_id, tok)
            done |= torch.isin(tok, stops)
        out.append(tok)
        if i + 1 == params.max_new_tokens or bool(done.all()):
            break
        logits = step(tok)
    return torch.stack(out, 1)


def _positions(valid: torch.Tensor) -> torch.Tensor:
    """(batch, T) bool -> (batch, T) positions counting only real tokens (padding gets 0)."""
    return (valid.long().cumsum(-1) - 1).clamp(min=0)


def cached_step(model: nn.Module, cache, input_ids: torch.Tensor) -> torch.Tensor:
    """One forward through ``cache``: prepare, run, commit. -> the last column's logits
    (batch, vocab). Any cache with ``prepare(ids)`` and ``commit(ctx)`` (chapter 08's)."""
    ctx = cache.prepare(input_ids)
    last = torch.full((input_ids.shape[0],), input_ids.shape[1] - 1, device=input_ids.device)
    logits = model(input_ids, dataclasses.replace(ctx, logits_at=last))
    cache.commit(ctx)
    return logits


@torch.no_grad()
def generate(model: nn.Module, input_ids: torch.Tensor, params: SamplingParams | None = None, *,
             attention_mask: torch.Tensor | None = None, cache=None, use_cache: bool = True,
             generator: torch.Generator | None = None, pad_token_id: int = 0,
             progress: bool = False, **sampling) -> torch.Tensor:
    """Continue each row of ``input_ids`` (batch, T) -> (batch, T + n), n <= max_new_tokens.

    ``params`` says how to choose tokens (default ``SamplingParams()``); keyword arguments named
    like its fields override it: ``generate(model, ids, max_new_tokens=20, temperature=0)``.
    ``attention_mask`` (batch, T; 1 = real) marks left padding. ``cache``: a KV cache to decode
    through (default a fresh ``ContiguousKVCache``); ``use_cache=False`` re-reads the last
    ``block_size`` tokens every step instead. The draws use ``generator``, else one seeded with
    ``params.seed``. Stop strings, ``logprobs`` and ``regex`` need a tokenizer: use the serving
    engine (:class:`llmlab.serve.LLMEngine`).
    """
    params = sampling_params(params, sampling)
    if input_ids.dim() != 2:
        raise ValueError(f"input_ids must be (batch, T) token ids, got {tuple(input_ids.shape)}")
    if attention_mask is not None and attention_mask.shape != input_ids.shape:
        raise ValueError(f"attention_mask {tuple(attention_mask.shape)} must match input_ids "
                         f"{tuple(input_ids.shape)}")
    if params.stop or params.logprobs is not None or params.regex is not None:
        raise ValueError("generate has no tokenizer: stop strings, logprobs and regex need the "
                         "serving engine (llmlab.serve.LLMEngine)")
    valid = (torch.ones_like(input_ids, dtype=torch.bool) if attention_mask is None
             else attention_mask.bool())
    padded = not bool(valid.all())
    prompts = ([row[v].tolist() for row, v in zip(input_ids, valid)] if params.uses_history
               else None)
    if padded and cache is not None and getattr(cache, "key_valid", None) is None:
        raise ValueError("a left-padded batch needs a cache that masks the padding: pass "
                         "ContiguousKVCache(n_layer, key_valid=attention_mask.bool()) or no cache")
    if use_cache:
        step, first = _cached(model, input_ids, valid, padded, params, cache)
    else:
        step, first = _recomputed(model, input_ids, valid, padded)
    new = decode_loop(first, step, params, generator, prompts, pad_token_id, progress)
    return torch.cat([input_ids, new], 1)


def _cached(model: nn.Module, idx: torch.Tensor, valid: torch.Tensor, padded: bool,
            params: SamplingParams, cache) -> tuple[Step, torch.Tensor]:
    """Prefill ``idx`` into a cache; each step feeds one token per row."""
    if cache is None:
        cache = ContiguousKVCache(model.config.n_layer, idx.shape[1] + params.max_new_tokens,
                                  valid if padded else None)
    first = cached_step(model, cache, idx)
    return (lambda tok: cached_step(model, cache, tok[:, None])), first


def _recomputed(model: nn.Module, idx: torch.Tensor, valid: torch.Tensor,
                padded: bool) -> tuple[Step, torch.Tensor]:
    """No cache: every step runs the model over the last ``block_size`` tokens."""
    block = model.config.block_size
    seq, seen = idx, valid

    def logits() -> torch.Tensor:
        ids, ok = seq[:, -block:], seen[:, -block:]
        mask = padded_causal_mask(ok, ok.shape[1]) if padded else None
        return model(ids, StepContext(_positions(ok), mask))[:, -1]

    def step(tok: torch.Tensor) -> torch.Tensor:
        nonlocal seq, seen
        seq = torch.cat([seq, tok[:, None]], 1)
        seen = torch.cat([seen, torch.ones_like(seen[:, :1])], 1)
        return logits()

    return step, logits()
