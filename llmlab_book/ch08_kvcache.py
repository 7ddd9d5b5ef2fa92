"""Chapter 08 (solutions/08_kvcache): known wrong answers its checks name.

See :mod:`llmlab_book.catalogue` for the format.
"""

from __future__ import annotations

import torch

from llmlab.kvcache import ContiguousKVCache


@torch.no_grad()
def cached_generate_positions_with_padding(model, idx, max_new_tokens, attention_mask=None,
                                           eos_token_id=None, pad_token_id=0):
    """Greedy cached decoding whose positions count the left padding (RoPE then sees a shift)."""
    valid = torch.ones_like(idx, dtype=torch.bool) if attention_mask is None else attention_mask.bool()
    padded = not bool(valid.all())
    cache = ContiguousKVCache(model.config.n_layer, idx.shape[1] + max_new_tokens,
                              valid if padded else None)
    logits = model(idx, None, cache)[:, -1]
    out = []
    for _ in range(max_new_tokens):
        tok = logits.argmax(-1)
        out.append(tok)
        logits = model(tok[:, None], None, cache)[:, -1]
    return torch.cat([idx, torch.stack(out, 1)], 1)
