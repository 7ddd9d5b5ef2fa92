"""Rollouts: sample completions for a batch of prompts and score them under a model.

A rollout is (prompt, completion) token ids plus a completion mask that ends at the first
end-of-sequence token (kept: the model must learn to stop). Sampling is
:func:`llmlab.model.generate` with a :class:`~llmlab.model.SamplingParams`, decoding through
the KV cache. Taught in chapter 06 (solutions/06_align).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from llmlab.align.logprobs import token_log_probs
from llmlab.model.generate import generate, sampling_params
from llmlab.model.sampling import SamplingParams


@dataclass
class Rollout:
    """``ids`` (batch, P + C): prompt then completion; ``prompt_len`` P;
    ``mask`` (batch, C) float, 1 on completion tokens up to and including the first EOS."""

    ids: torch.Tensor
    prompt_len: int
    mask: torch.Tensor

    @property
    def completion(self) -> torch.Tensor:
        """(batch, C) completion ids."""
        return self.ids[:, self.prompt_len:]


def completion_mask(completion: torch.Tensor, eos_token_id: int | None) -> torch.Tensor:
    """1 up to and including the first ``eos_token_id`` in each row, 0 after.
    (batch, C) -> (batch, C) float."""
    if eos_token_id is None:
        return torch.ones_like(completion, dtype=torch.float32)
    is_eos = (completion == eos_token_id).int()
    after = (is_eos.cumsum(1) - is_eos) > 0  # strictly after the first EOS
    return (~after).float()


@torch.no_grad()
def sample_rollout(model: torch.nn.Module, prompt_ids: torch.Tensor,
                   params: SamplingParams | None = None, *,
                   generator: torch.Generator | None = None, **sampling) -> Rollout:
    """Sample one completion per row. prompt_ids: (batch, P), all prompts the same length.

    ``params`` and the keyword overrides are :func:`llmlab.model.generate`'s (e.g.
    ``max_new_tokens=8, temperature=1.0, eos_token_id=eos``). Every completion has
    ``max_new_tokens`` columns: after its end-of-sequence token a row holds that token again.
    """
    params = sampling_params(params, sampling)
    eos = params.eos_token_id
    was_training = model.training
    model.eval()
    ids = generate(model, prompt_ids, params, generator=generator,
                   pad_token_id=0 if eos is None else eos)
    model.train(was_training)
    P, n = prompt_ids.shape[1], params.max_new_tokens
    if ids.shape[1] < P + n:  # every row stopped early: pad with EOS
        pad = torch.full((ids.shape[0], P + n - ids.shape[1]), eos, device=ids.device)
        ids = torch.cat([ids, pad], 1)
    return Rollout(ids, P, completion_mask(ids[:, P:], eos))


def completion_log_probs(model: torch.nn.Module, rollout: Rollout, return_logits: bool = False):
    """log pi(completion token | prefix) for every completion position: (batch, C).

    The model scores ``ids[:, :-1]``; the last C of those positions predict the completion.
    With ``return_logits`` also returns the (batch, C, vocab) logits.
    """
    out = model(rollout.ids[:, :-1])
    logits = (out.logits if hasattr(out, "logits") else out)[:, rollout.prompt_len - 1:]
    lp = token_log_probs(logits, rollout.completion)
    return (lp, logits) if return_logits else lp
