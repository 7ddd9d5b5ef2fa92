"""Rollouts: sample completions for a batch of prompts and score them under a model.

A rollout is (prompt, completion) token ids plus a completion mask that ends at the first
end-of-sequence token (kept: the model must learn to stop). Sampling reuses chapter 02's
``llmlab.model.generate``. Taught in chapter 06 (solutions/06_align).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from llmlab.align.logprobs import token_log_probs
from llmlab.model import generate


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


def completion_mask(completion: torch.Tensor, eos_id: int | None) -> torch.Tensor:
    """1 up to and including the first ``eos_id`` in each row, 0 after. (batch, C) -> (batch, C) float."""
    if eos_id is None:
        return torch.ones_like(completion, dtype=torch.float32)
    is_eos = (completion == eos_id).int()
    after = (is_eos.cumsum(1) - is_eos) > 0  # strictly after the first EOS
    return (~after).float()


@torch.no_grad()
def sample_rollout(model: torch.nn.Module, prompt_ids: torch.Tensor, max_new_tokens: int,
                   temperature: float = 1.0, eos_id: int | None = None,
                   generator: torch.Generator | None = None) -> Rollout:
    """Sample one completion per row. prompt_ids: (batch, P), all prompts the same length."""
    was_training = model.training
    model.eval()
    ids = generate(model, prompt_ids, max_new_tokens, temperature=temperature,
                   generator=generator, eos_id=eos_id)
    model.train(was_training)
    P = prompt_ids.shape[1]
    if ids.shape[1] < P + max_new_tokens:  # every row stopped early: pad with EOS
        pad = torch.full((ids.shape[0], P + max_new_tokens - ids.shape[1]), eos_id)
        ids = torch.cat([ids, pad], 1)
    return Rollout(ids, P, completion_mask(ids[:, P:], eos_id))


def completion_log_probs(model: torch.nn.Module, rollout: Rollout, return_logits: bool = False):
    """log pi(completion token | prefix) for every completion position: (batch, C).

    The model scores ``ids[:, :-1]``; the last C of those positions predict the completion.
    With ``return_logits`` also returns the (batch, C, vocab) logits.
    """
    out = model(rollout.ids[:, :-1])
    logits = (out.logits if hasattr(out, "logits") else out)[:, rollout.prompt_len - 1:]
    lp = token_log_probs(logits, rollout.completion)
    return (lp, logits) if return_logits else lp
