"""Chapter 08 (solutions/08_kvcache): known wrong answers its checks name.

See :mod:`llmlab_book.catalogue` for the format.
"""

from __future__ import annotations

import torch

from llmlab.kvcache import ContiguousKVCache


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
