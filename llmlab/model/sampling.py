"""The one decoding contract: ``SamplingParams`` and the logits -> token pipeline.

Every decoding path of llmlab — :func:`llmlab.model.generate` (and through it RL rollouts,
prefix tuning and paged generation), the serving engine and speculative decoding — turns logits
into tokens here, in this order:

1. logit bias (OpenAI's ``logit_bias``): add a constant to chosen tokens' logits;
2. repetition penalty over the prompt and the output (CTRL, Keskar et al., arXiv:1909.05858):
   divide a seen token's positive logit by the penalty, multiply a negative one;
3. presence and frequency penalties over the output (OpenAI): subtract ``presence`` once and
   ``frequency`` per occurrence;
4. temperature; ``temperature == 0`` is greedy decoding (the argmax of steps 1-3, nothing below);
5. top-k: keep the ``top_k`` largest logits (``0`` = off);
6. top-p, nucleus sampling (Holtzman et al., "The Curious Case of Neural Text Degeneration",
   arXiv:1904.09751): keep the smallest set of most likely tokens whose probability reaches
   ``top_p`` (``1.0`` = off) — the most likely token always stays;
7. min-p (Nguyen et al., "Turning Up the Heat: Min-p Sampling", arXiv:2407.01082): drop tokens
   below ``min_p`` times the most likely one (``0.0`` = off);

then one multinomial draw per row. Steps 4-7 equal Hugging Face ``transformers``' logits
warpers (``tests/serve/test_sampling.py``), and sampling with a seed reproduces
``transformers``' ``generate`` token for token (``tests/kvcache/test_generate.py``). A draw uses
the generator it is given (one per request in the engine, so a request's sample does not depend
on its neighbours in the batch). Taught in chapter 02 (solutions/02_gpt: temperature, top-k,
top-p) and chapter 09 (solutions/09_serve: penalties, min-p, seeds).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from llmlab.utils import reject_unknown_keys


@reject_unknown_keys
@dataclass
class SamplingParams:
    """How to pick the next tokens. The default is greedy decoding, as ``transformers``'
    ``generate``; any ``temperature > 0`` samples (the OpenAI server passes its default of 1).

    ``max_new_tokens``: tokens to generate at most; ``temperature``: 0 = greedy (the filters
    are then unused);
    ``top_k`` (0 = off), ``top_p`` (1.0 = off), ``min_p`` (0.0 = off): the filters above;
    ``repetition_penalty`` (1.0 = off), ``presence_penalty``, ``frequency_penalty`` (0 = off),
    ``logit_bias`` {token id: added logit}; ``seed``: the draws' seed (None: unseeded, or the
    generator a caller passes); ``eos_token_id``: a row ends after emitting it (the serving engine
    falls back to its tokenizer's end-of-text token); ``stop`` strings and ``stop_token_ids`` end
    a request too, ``ignore_eos`` disables the end-of-sequence token; ``logprobs``: also report
    the chosen token's log-probability and that many most likely ones; ``regex``: constrain the
    output (serving only). A bad value raises ``ValueError(message, field name)``.
    """

    max_new_tokens: int = 16
    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    min_p: float = 0.0
    repetition_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logit_bias: dict[int, float] = field(default_factory=dict)
    seed: int | None = None
    eos_token_id: int | None = None
    stop: list[str] = field(default_factory=list)
    stop_token_ids: list[int] = field(default_factory=list)
    ignore_eos: bool = False
    logprobs: int | None = None
    regex: str | None = None

    def __post_init__(self) -> None:
        checks = [
            ("max_new_tokens", isinstance(self.max_new_tokens, int) and self.max_new_tokens >= 1,
             "an integer >= 1"),
            ("temperature", 0 <= self.temperature <= 2, "in [0, 2]"),
            ("top_k", isinstance(self.top_k, int) and self.top_k >= 0, "an integer >= 0"),
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
        if any(not -100 <= b <= 100 for b in self.logit_bias.values()):
            raise ValueError("logit_bias values must be in [-100, 100]", "logit_bias")

    def validate(self, vocab_size: int) -> SamplingParams:
        """Also check the token ids against a vocabulary; return self."""
        bad = [t for t in [*self.logit_bias, *self.stop_token_ids] if not 0 <= t < vocab_size]
        if self.eos_token_id is not None and not 0 <= self.eos_token_id < vocab_size:
            bad.append(self.eos_token_id)
        if bad:
            raise ValueError(f"token ids must be in [0, {vocab_size}), got {bad}", "logit_bias")
        return self

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    @property
    def uses_history(self) -> bool:
        """Whether the pipeline reads the tokens seen so far (a penalty is on)."""
        return (self.repetition_penalty != 1.0 or self.presence_penalty != 0.0
                or self.frequency_penalty != 0.0)


def apply_penalties(logits: torch.Tensor, prompt_ids: Sequence[int], output_ids: Sequence[int],
                    params: SamplingParams) -> torch.Tensor:
    """Steps 1-3: logit bias, repetition, presence and frequency penalties. (vocab,) -> (vocab,)."""
    logits = logits.clone()
    dev = logits.device
    if params.logit_bias:
        ids = torch.tensor(list(params.logit_bias), device=dev)
        logits[ids] += torch.tensor(list(params.logit_bias.values()), dtype=logits.dtype,
                                    device=dev)
    if params.repetition_penalty != 1.0 and (prompt_ids or output_ids):
        seen = torch.tensor(sorted(set(prompt_ids) | set(output_ids)), device=dev)
        score = logits[seen]
        logits[seen] = torch.where(score > 0, score / params.repetition_penalty,
                                   score * params.repetition_penalty)
    if output_ids and (params.presence_penalty or params.frequency_penalty):
        counts = torch.bincount(torch.tensor(list(output_ids), device=dev),
                                minlength=logits.shape[-1])
        logits -= params.frequency_penalty * counts + params.presence_penalty * (counts > 0)
    return logits


def filter_logits(logits: torch.Tensor, top_k: int = 0, top_p: float = 1.0,
                  min_p: float = 0.0) -> torch.Tensor:
    """Steps 5-7: set the logits top-k, top-p and min-p drop to -inf; the best token survives.

    logits: (..., vocab) -> (..., vocab). ``top_k=0``, ``top_p=1.0``, ``min_p=0.0`` are off.
    """
    if top_k > 0:
        kth = torch.topk(logits, min(top_k, logits.shape[-1]), dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, -math.inf)
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        probs = sorted_logits.softmax(-1)
        drop = probs.cumsum(-1) - probs >= top_p  # the mass ranked above already reaches p
        drop[..., 0] = False
        logits = logits.masked_fill(drop.scatter(-1, order, drop), -math.inf)
    if min_p > 0.0:
        probs = logits.softmax(-1)
        logits = logits.masked_fill(probs < min_p * probs.max(-1, keepdim=True).values, -math.inf)
    return logits


def process_logits(logits: torch.Tensor, params: SamplingParams,
                   prompt_ids: Sequence | None = None,
                   output_ids: Sequence | None = None) -> torch.Tensor:
    """Steps 1-7 in float32; greedy stops after step 3.

    logits: (vocab,) with ``prompt_ids``/``output_ids`` lists of ints, or (batch, vocab) with one
    list per row (None: nothing seen yet). -> the same shape, float32.
    """
    logits = logits.float()
    if params.logit_bias or params.uses_history:
        if logits.dim() == 1:
            logits = apply_penalties(logits, prompt_ids or [], output_ids or [], params)
        else:
            rows = len(logits)
            prompts, outputs = prompt_ids or [[]] * rows, output_ids or [[]] * rows
            logits = torch.stack([apply_penalties(row, p, o, params)
                                  for row, p, o in zip(logits, prompts, outputs)])
    if params.greedy:
        return logits
    return filter_logits(logits / params.temperature, params.top_k, params.top_p, params.min_p)


def sample_from(probs: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """One multinomial draw per row: probs (..., vocab) -> ids (...) on probs' device.

    The draw runs on the generator's device (a CPU generator drives GPU decoding too), so a
    seeded run samples the same tokens on any device.
    """
    where = generator.device if generator is not None else probs.device
    return torch.multinomial(probs.to(where), 1, generator=generator).to(probs.device)[..., 0]


def next_token(processed: torch.Tensor, params: SamplingParams,
               generator: torch.Generator | None = None) -> torch.Tensor:
    """The chosen tokens from processed logits (..., vocab) -> (...): argmax when greedy, else a
    draw from their softmax."""
    if params.greedy:
        return processed.argmax(-1)
    return sample_from(processed.softmax(-1), generator)


def make_generator(params: SamplingParams, device: torch.device | str = "cpu"
                   ) -> torch.Generator | None:
    """A generator seeded with ``params.seed`` on ``device`` (None when unseeded)."""
    if params.seed is None:
        return None
    return torch.Generator(device=device).manual_seed(params.seed)


def top_logprobs(logits: torch.Tensor, token: int, n: int) -> tuple[float, dict[int, float]]:
    """The chosen token's log-probability under the model and the ``n`` most likely tokens'.

    logits: (vocab,) raw (before the pipeline).
    """
    logp = torch.log_softmax(logits.float(), -1)
    best = torch.topk(logp, n) if n else None
    top = {} if best is None else dict(zip(best.indices.tolist(), best.values.tolist()))
    return float(logp[token]), top
