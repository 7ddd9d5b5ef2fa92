"""Speculative decoding: a cheap drafter proposes k tokens, the target verifies them in one forward.

Leviathan, Kalman & Matias, "Fast Inference from Transformers via Speculative Decoding"
(arXiv 2211.17192) and Chen et al., "Accelerating Large Language Model Decoding with Speculative
Sampling" (arXiv 2302.01318). The drafter proposes ``x_1..x_k`` with probabilities ``q_i``; one
target forward over the k+1 positions gives ``p_1..p_{k+1}``. Draft ``x_i`` is accepted with
probability ``min(1, p_i(x_i) / q_i(x_i))``; at the first rejection a token is drawn from the
residual ``norm(max(0, p_i - q_i))``, and if all k are accepted a bonus token is drawn from
``p_{k+1}``. Every emitted token is then distributed *exactly* as the target's own sample (the
accept and residual branches add up to ``p``), so the output distribution is unchanged while a
forward yields up to k+1 tokens. Greedy decoding (``p`` one-hot on the argmax) reduces to
"accept while the draft equals the target's argmax", identical to plain greedy decoding.

Drafters: :class:`NgramDrafter` (prompt lookup decoding, Saxena 2023: copy what followed the
latest earlier occurrence of the last n tokens; deterministic, so ``q`` is one-hot) and
:class:`ModelDrafter` (a smaller model; :func:`early_exit_model` makes one from the target's
first layers, the self-speculative draft of Zhang et al., "Draft & Verify", arXiv 2309.08168).
Taught in chapter 09 (solutions/09_serve).
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass

import torch
from torch import nn

from llmlab.model.cache import ContiguousKVCache
from llmlab.model.generate import cached_step, sampling_params, stop_token_ids
from llmlab.model.sampling import (
    SamplingParams,
    make_generator,
    next_token,
    process_logits,
    sample_from,
)


def accept_draft(p: torch.Tensor, q: torch.Tensor | None, draft: list[int],
                 u: torch.Tensor) -> tuple[int, torch.Tensor]:
    """The acceptance rule with given uniforms: how many drafts survive, and what to sample next.

    p: (k + 1, vocab) target probabilities; q: (k, vocab) draft probabilities or None (one-hot);
    u: (k,) uniforms in [0, 1). Draft ``i`` is accepted when ``u[i] * q_i(x_i) <= p_i(x_i)``
    (probability ``min(1, p/q)``). Returns ``(n_accepted, dist)``: ``dist`` (vocab,) is the
    normalized residual ``max(0, p_i - q_i)`` at the first rejection, or ``p[k]`` if all pass.
    """
    k = len(draft)
    if p.shape[0] != k + 1 or (q is not None and q.shape[0] != k) or u.shape[0] < k:
        raise ValueError(f"need p (k+1, vocab), q (k, vocab), u (k,) for k = {k}, got "
                         f"{tuple(p.shape)}, {None if q is None else tuple(q.shape)}, "
                         f"{tuple(u.shape)}")
    for i, x in enumerate(draft):
        q_i = torch.zeros_like(p[i]).index_fill_(0, torch.tensor([x]), 1.0) if q is None else q[i]
        if u[i] * q_i[x] <= p[i, x]:
            continue
        residual = (p[i] - q_i).clamp(min=0)
        if float(residual.sum()) <= 0:  # p == q: a rejection had probability 0
            return i, p[i]
        return i, residual / residual.sum()
    return k, p[k]


def rejection_sample(p: torch.Tensor, q: torch.Tensor | None, draft: list[int],
                     generator: torch.Generator | None = None) -> list[int]:
    """Verify ``draft`` (k tokens) against target probabilities; return the emitted tokens.

    p: (k + 1, vocab) target probabilities at each draft position and one past the last;
    q: (k, vocab) draft probabilities, or None for a deterministic draft (one-hot ``q``).
    Returns the accepted prefix of ``draft`` followed by one more token (1 to k + 1 tokens).
    """
    u = torch.rand(len(draft), generator=generator, device=p.device)
    n, dist = accept_draft(p, q, draft, u)
    return list(draft[:n]) + [int(sample_from(dist, generator))]


def greedy_verify(target_argmax: list[int], draft: list[int]) -> list[int]:
    """Greedy verification: keep drafts while they equal the target's argmax, then its argmax."""
    out = []
    for x, t in zip(draft, target_argmax):
        if x != t:
            break
        out.append(x)
    return out + [target_argmax[len(out)]]


class NgramDrafter:
    """Prompt-lookup drafting: find the last ``n``-gram earlier in the context, copy what followed."""

    def __init__(self, n: int = 3) -> None:
        self.n = n

    def propose(self, tokens: list[int], k: int) -> tuple[list[int], torch.Tensor | None]:
        for n in range(min(self.n, len(tokens) - 1), 0, -1):
            tail = tokens[-n:]
            for start in range(len(tokens) - n - 1, -1, -1):
                if tokens[start:start + n] == tail:
                    follow = tokens[start + n:start + n + k]
                    return follow, None
        return [], None


def early_exit_model(model: nn.Module, n_layer: int) -> nn.Module:
    """A draft model sharing the target's embeddings, first ``n_layer`` blocks, norm and head."""
    if not 1 <= n_layer <= model.config.n_layer:
        raise ValueError(f"n_layer must be in [1, {model.config.n_layer}], got {n_layer}")
    draft = copy.copy(model)  # shallow: the modules (and their weights) are shared
    draft._modules = dict(model._modules)
    draft.blocks = nn.ModuleList(list(model.blocks)[:n_layer])
    draft.config = dataclasses.replace(model.config, n_layer=n_layer)
    return draft


class ModelDrafter:
    """Draft with a small model and its own KV cache (rolled back to the verified prefix)."""

    def __init__(self, model: nn.Module, params: SamplingParams,
                 generator: torch.Generator | None = None) -> None:
        self.model, self.params, self.generator = model, params, generator
        self.cache = ContiguousKVCache(model.config.n_layer)
        self.cached: list[int] = []  # the tokens whose keys and values the cache holds

    @torch.no_grad()
    def propose(self, tokens: list[int], k: int) -> tuple[list[int], torch.Tensor | None]:
        keep = 0
        while keep < min(len(self.cached), len(tokens) - 1) and self.cached[keep] == tokens[keep]:
            keep += 1
        self.cache.truncate(keep)
        device = next(self.model.parameters()).device
        feed, ctx, draft, qs = tokens[keep:], list(tokens), [], []
        for _ in range(k):
            logits = cached_step(self.model, self.cache, torch.tensor([feed], device=device))[0]
            processed = process_logits(logits, self.params, ctx, [])
            x = int(next_token(processed, self.params, self.generator))
            probs = processed.softmax(-1)
            draft.append(x)
            qs.append(probs)
            ctx.append(x)
            feed = [x]
        self.cached = ctx[:-1]
        return draft, (torch.stack(qs) if qs else None)


@dataclass
class SpecStats:
    """Forwards of the target, tokens drafted and accepted."""

    target_forwards: int = 0
    drafted: int = 0
    accepted: int = 0

    @property
    def acceptance_rate(self) -> float:
        return self.accepted / self.drafted if self.drafted else 0.0

    @property
    def tokens_per_forward(self) -> float:
        return (self.accepted + self.target_forwards) / max(self.target_forwards, 1)


@torch.no_grad()
def speculative_generate(model: nn.Module, prompt: list[int], drafter,
                         params: SamplingParams | None = None, *, k: int = 4,
                         generator: torch.Generator | None = None,
                         **sampling) -> tuple[list[int], SpecStats]:
    """Generate for one sequence with draft-and-verify; returns (new tokens, statistics).

    ``params`` and the keyword overrides are :func:`llmlab.model.generate`'s (default greedy);
    every position is scored by the one logits pipeline. Stop strings need the engine.
    """
    params = sampling_params(params, sampling)
    generator = generator if generator is not None else make_generator(params)
    stops = set(stop_token_ids(params))
    max_new_tokens = params.max_new_tokens
    device = next(model.parameters()).device
    cache, stats = ContiguousKVCache(model.config.n_layer), SpecStats()
    tokens = list(prompt)
    if len(tokens) > 1:
        cached_step(model, cache, torch.tensor([tokens[:-1]], device=device))
    limit = model.config.block_size
    while len(tokens) - len(prompt) < max_new_tokens:
        room = min(max_new_tokens - (len(tokens) - len(prompt)), limit - len(tokens)) - 1
        draft, q = drafter.propose(tokens, max(0, min(k, room)))
        if q is not None and len(draft) < q.shape[0]:
            q = q[:len(draft)]
        x = torch.tensor([[tokens[-1], *draft]], device=device)
        ctx = cache.prepare(x)
        logits = model(x, ctx)[0]  # (k + 1, vocab): the target scores every draft at once
        cache.commit(ctx)
        stats.target_forwards += 1
        stats.drafted += len(draft)
        outs = tokens[len(prompt):]
        processed = torch.stack([process_logits(logits[i], params, prompt, outs + draft[:i])
                                 for i in range(len(draft) + 1)])
        if params.greedy:
            new = greedy_verify(next_token(processed, params).tolist(), draft)
        else:
            new = rejection_sample(processed.softmax(-1), q, draft, generator)
        stats.accepted += len(new) - 1
        cache.truncate(len(tokens) + len(new) - 1)  # keep the verified tokens' keys and values
        for t in new:
            tokens.append(t)
            if t in stops or len(tokens) - len(prompt) >= max_new_tokens or len(tokens) >= limit:
                return tokens[len(prompt):], stats
    return tokens[len(prompt):], stats
