"""Paged generation: prompts of different lengths decoded over a :class:`PagedKVCache`.

The same decode loop as :func:`llmlab.model.generate` (:func:`llmlab.model.decode_loop`, one
:class:`~llmlab.model.SamplingParams`), with the rows stored in a paged cache instead of a
contiguous one: each prompt is stored without padding, and prefixes already in the prefix cache
are not recomputed. Greedy paged decoding gives the tokens of contiguous decoding
(``tests/kvcache/test_paged.py``). Taught in chapter 08 (solutions/08_kvcache).
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import torch
from torch import nn

from llmlab.kvcache.paged import PagedKVCache
from llmlab.model.generate import decode_loop, sampling_params
from llmlab.model.sampling import SamplingParams


@torch.no_grad()
def generate_paged(model: nn.Module, prompts: Sequence[Sequence[int]], cache: PagedKVCache,
                   params: SamplingParams | None = None, *,
                   seq_ids: Sequence[Hashable] | None = None, free: bool = True,
                   generator: torch.Generator | None = None, pad_token_id: int = 0,
                   progress: bool = False, **sampling) -> list[list[int]]:
    """Generate for token lists of different lengths; returns each row's new tokens.

    ``params`` and the keyword overrides are :func:`llmlab.model.generate`'s. With ``free`` the
    sequences are freed at the end (their full blocks stay in the prefix cache when it is on).
    """
    params = sampling_params(params, sampling)
    device = next(model.parameters()).device
    seq_ids = list(range(len(prompts))) if seq_ids is None else list(seq_ids)
    cached = [cache.add_sequence(s, list(p)) for s, p in zip(seq_ids, prompts)]
    rest = [list(p[c:]) for p, c in zip(prompts, cached)]

    def forward(tokens: list[list[int]]) -> torch.Tensor:  # one step: prepare, run, commit
        ctx = cache.prepare(seq_ids, tokens=tokens, device=device, last_logits=True)
        width = max(map(len, tokens))
        x = torch.tensor([r + [pad_token_id] * (width - len(r)) for r in tokens], device=device)
        logits = model(x, ctx)  # (batch, vocab) at each row's last new token
        cache.commit(ctx)
        return logits

    first = forward(rest)

    def step(tok: torch.Tensor) -> torch.Tensor:
        return forward([[t] for t in tok.tolist()])

    history = [list(p) for p in prompts] if params.uses_history else None
    new = decode_loop(first, step, params, generator, history, pad_token_id, progress)
    if free:
        for s in seq_ids:
            cache.free(s)
    return new.tolist()
