"""Multiple choice by log-likelihood: score every choice as a continuation, pick the most likely.

lm-evaluation-harness's ``output_type: multiple_choice`` (as used for HellaSwag, ARC, MMLU's
log-likelihood variant): each choice ``c`` is the continuation ``target_delimiter + c`` of the
prompt (few-shot examples, then the item's query), and

- ``acc``: the choice with the highest log p(c | prompt) is the gold one;
- ``acc_norm``: the highest log p(c | prompt) / len(c) (characters of the choice text, without
  the delimiter), which stops long choices losing merely for having more tokens to pay for.

Few-shot prompts: ``k`` solved examples (query, delimiter, gold choice), each followed by
``fewshot_delimiter``. Which examples are drawn moves the score: measure it over several draws
(Zhao et al., "Calibrate Before Use", arXiv:2102.09690). Taught in chapter 11 (solutions/11_eval).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from llmlab.evaluate.likelihood import Loglikelihood, Request, loglikelihood


@dataclass(frozen=True)
class MCItem:
    """A question (``query``, the text before the answer), its ``choices`` and the gold index."""

    query: str
    choices: tuple[str, ...]
    gold: int

    def __post_init__(self) -> None:
        if not 0 <= self.gold < len(self.choices):
            raise ValueError(f"gold {self.gold} is not an index of {len(self.choices)} choices")


@dataclass(frozen=True)
class PromptFormat:
    """How an item becomes text (lm-eval's ``target_delimiter`` and ``fewshot_delimiter``)."""

    target_delimiter: str = " "
    fewshot_delimiter: str = "\n\n"


@dataclass
class MCResult:
    """Per-item outcomes (0/1) and the choices' log-likelihoods."""

    acc: list[int] = field(default_factory=list)
    acc_norm: list[int] = field(default_factory=list)
    logprobs: list[list[float]] = field(default_factory=list)

    @property
    def mean_acc(self) -> float:
        return sum(self.acc) / len(self.acc)

    @property
    def mean_acc_norm(self) -> float:
        return sum(self.acc_norm) / len(self.acc_norm)


def fewshot_prefix(examples: Sequence[MCItem], fmt: PromptFormat = PromptFormat()) -> str:
    """The solved examples a prompt starts with ("" for zero-shot)."""
    return "".join(ex.query + fmt.target_delimiter + ex.choices[ex.gold] + fmt.fewshot_delimiter
                   for ex in examples)


def sample_shots(pool: Sequence[MCItem], k: int, seed: int) -> list[MCItem]:
    """``k`` examples drawn without replacement from ``pool`` (seeded)."""
    if k > len(pool):
        raise ValueError(f"cannot draw {k} shots from a pool of {len(pool)}")
    return random.Random(seed).sample(list(pool), k)


def mc_requests(item: MCItem, prefix: str = "", fmt: PromptFormat = PromptFormat()) -> list[Request]:
    """One request per choice."""
    return [Request(prefix + item.query, fmt.target_delimiter + c) for c in item.choices]


def mc_decision(logprobs: Sequence[float], choices: Sequence[str], gold: int) -> tuple[int, int]:
    """(acc, acc_norm) of one item from its choices' log-likelihoods. Ties go to the first."""
    if len(logprobs) != len(choices):
        raise ValueError(f"{len(logprobs)} log-likelihoods for {len(choices)} choices")
    lp = torch.tensor(logprobs, dtype=torch.float64)
    lengths = torch.tensor([float(len(c)) for c in choices], dtype=torch.float64)
    return int(int(lp.argmax()) == gold), int(int((lp / lengths).argmax()) == gold)


def evaluate_mc(model: torch.nn.Module, tokenizer, items: Sequence[MCItem],
                shots: Sequence[MCItem] = (), fmt: PromptFormat = PromptFormat(),
                scorer: Callable[..., list[Loglikelihood]] = loglikelihood,
                batch_size: int = 16, progress: Callable | None = None) -> MCResult:
    """acc and acc_norm of ``model`` on ``items`` with the same few-shot ``shots`` for each.

    ``scorer(model, tokenizer, requests, batch_size=..., progress=...)`` computes the
    log-likelihoods (:func:`llmlab.evaluate.loglikelihood`, or a learner's own).
    """
    prefix = fewshot_prefix(shots, fmt)
    requests = [r for item in items for r in mc_requests(item, prefix, fmt)]
    scores = scorer(model, tokenizer, requests, batch_size=batch_size, progress=progress)
    result, at = MCResult(), 0
    for item in items:
        lps = [s.logprob for s in scores[at:at + len(item.choices)]]
        at += len(item.choices)
        acc, acc_norm = mc_decision(lps, item.choices, item.gold)
        result.acc.append(acc)
        result.acc_norm.append(acc_norm)
        result.logprobs.append(lps)
    return result


def fewshot_spread(model: torch.nn.Module, tokenizer, items: Sequence[MCItem],
                   pool: Sequence[MCItem], k: int, seeds: Sequence[int],
                   **kwargs) -> list[MCResult]:
    """:func:`evaluate_mc` once per seed, each with its own draw of ``k`` shots from ``pool``."""
    return [evaluate_mc(model, tokenizer, items, sample_shots(pool, k, s), **kwargs) for s in seeds]


__all__ = ["MCItem", "MCResult", "PromptFormat", "evaluate_mc", "fewshot_prefix",
           "fewshot_spread", "mc_decision", "mc_requests", "sample_shots"]
