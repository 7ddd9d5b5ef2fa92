"""Sampling parameters and the logits pipeline of an OpenAI-style request.

One request's next-token distribution goes through, in order: logit bias (OpenAI's
``logit_bias``), the repetition penalty (CTRL, Keskar et al., arXiv 1909.05858: divide a positive
logit of a seen token by the penalty, multiply a negative one), OpenAI's presence and frequency
penalties (subtract ``presence`` once and ``frequency`` per occurrence in the *output*),
temperature, top-k, top-p (nucleus, Holtzman et al., arXiv 1904.09751) and min-p (Nguyen et al.,
"Turning Up the Heat: Min-p Sampling", arXiv 2407.01082: drop tokens below ``min_p`` times the
most likely one). The filters equal Hugging Face ``transformers``' logits processors on the same
logits (``tests/serve/test_sampling.py``). Each request may carry its own seed, so its sample does
not depend on the other requests in the batch. Taught in chapter 09 (solutions/09_serve).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch


@dataclass
class SamplingParams:
    """What one request asks for. ``temperature == 0`` is greedy; ``top_k <= 0`` is no top-k."""

    max_tokens: int = 16
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    min_p: float = 0.0
    repetition_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logit_bias: dict[int, float] = field(default_factory=dict)
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    stop_token_ids: list[int] = field(default_factory=list)
    ignore_eos: bool = False
    logprobs: int | None = None  # also return this many most likely tokens' logprobs
    regex: str | None = None  # constrain the output to this regular expression

    def validate(self, vocab_size: int | None = None) -> SamplingParams:
        """Raise ``ValueError(message, param)`` naming the first bad field; return self."""
        checks = [
            ("max_tokens", self.max_tokens >= 1, "an integer >= 1"),
            ("temperature", 0 <= self.temperature <= 2, "in [0, 2]"),
            ("top_p", 0 < self.top_p <= 1, "in (0, 1]"),
            ("min_p", 0 <= self.min_p <= 1, "in [0, 1]"),
            ("repetition_penalty", self.repetition_penalty > 0, "> 0"),
            ("presence_penalty", -2 <= self.presence_penalty <= 2, "in [-2, 2]"),
            ("frequency_penalty", -2 <= self.frequency_penalty <= 2, "in [-2, 2]"),
            ("logprobs", self.logprobs is None or 0 <= self.logprobs <= 20, "in [0, 20]"),
            ("stop", len(self.stop) <= 4 and all(self.stop), "at most 4 non-empty strings"),
        ]
        for name, ok, expected in checks:
            if not ok:
                raise ValueError(f"{name} must be {expected}, got {getattr(self, name)!r}", name)
        if vocab_size is not None:
            bad = [t for t in [*self.logit_bias, *self.stop_token_ids] if not 0 <= t < vocab_size]
            if bad:
                raise ValueError(f"token ids must be in [0, {vocab_size}), got {bad}", "logit_bias")
        if any(not -100 <= b <= 100 for b in self.logit_bias.values()):
            raise ValueError("logit_bias values must be in [-100, 100]", "logit_bias")
        return self

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


def apply_penalties(logits: torch.Tensor, prompt_ids: list[int], output_ids: list[int],
                    params: SamplingParams) -> torch.Tensor:
    """Logit bias, repetition, presence and frequency penalties. logits: (vocab,) -> (vocab,)."""
    logits = logits.clone()
    if params.logit_bias:
        ids = torch.tensor(list(params.logit_bias))
        logits[ids] += torch.tensor(list(params.logit_bias.values()), dtype=logits.dtype)
    if params.repetition_penalty != 1.0 and (prompt_ids or output_ids):
        seen = torch.tensor(sorted(set(prompt_ids) | set(output_ids)))
        score = logits[seen]
        logits[seen] = torch.where(score > 0, score / params.repetition_penalty,
                                   score * params.repetition_penalty)
    if output_ids and (params.presence_penalty or params.frequency_penalty):
        counts = torch.bincount(torch.tensor(output_ids), minlength=logits.shape[-1])
        logits -= params.frequency_penalty * counts + params.presence_penalty * (counts > 0)
    return logits


def top_k_top_p_min_p(logits: torch.Tensor, top_k: int = 0, top_p: float = 1.0,
                      min_p: float = 0.0) -> torch.Tensor:
    """Set the logits the filters drop to -inf (at least the best token survives).

    logits: (..., vocab) -> (..., vocab). top-p keeps the smallest set of most likely tokens whose
    probability reaches ``top_p``; min-p keeps tokens with probability >= ``min_p * p_max``.
    """
    if top_k > 0:
        kth = torch.topk(logits, min(top_k, logits.shape[-1]), dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, -math.inf)
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        probs = sorted_logits.softmax(-1)
        drop = probs.cumsum(-1) - probs >= top_p  # the mass before this token already reaches p
        drop[..., 0] = False
        logits = logits.masked_fill(drop.scatter(-1, order, drop), -math.inf)
    if min_p > 0.0:
        probs = logits.softmax(-1)
        logits = logits.masked_fill(probs < min_p * probs.max(-1, keepdim=True).values, -math.inf)
    return logits


def process_logits(logits: torch.Tensor, params: SamplingParams, prompt_ids: list[int],
                   output_ids: list[int]) -> torch.Tensor:
    """The whole pipeline before the draw. logits: (vocab,) -> (vocab,) (greedy: no warping)."""
    logits = apply_penalties(logits.float(), prompt_ids, output_ids, params)
    if params.greedy:
        return logits
    return top_k_top_p_min_p(logits / params.temperature, params.top_k, params.top_p,
                             params.min_p)


def sample_token(logits: torch.Tensor, params: SamplingParams,
                 generator: torch.Generator | None = None) -> int:
    """Draw from processed logits (vocab,): argmax when greedy, else a multinomial draw."""
    if params.greedy:
        return int(logits.argmax())
    return int(torch.multinomial(logits.softmax(-1), 1, generator=generator))


def top_logprobs(logits: torch.Tensor, token: int, n: int) -> tuple[float, dict[int, float]]:
    """The chosen token's log-probability under the model and the ``n`` most likely tokens'."""
    logp = torch.log_softmax(logits.float(), -1)
    best = torch.topk(logp, n) if n else None
    top = {} if best is None else dict(zip(best.indices.tolist(), best.values.tolist()))
    return float(logp[token]), top
