"""A model as a pairwise judge, and the position bias that swapping the order exposes.

LLM-as-a-judge (Zheng et al., "Judging LLM-as-a-Judge with MT-Bench and Chatbot Arena",
arXiv:2306.05685) asks a model which of two answers is better. Judges prefer an answer for its
*position* (usually the first), its length or its style; the standard check is to ask twice with
the order swapped: a consistent judge picks the same answer both times. Here the judge's verdict
is read from its log-likelihoods — log p(" A") against log p(" B") after the prompt — so it is
deterministic and needs no parsing. Taught in chapter 11 (solutions/11_eval).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from llmlab.evaluate.likelihood import Request, loglikelihood


def judge_prompt(question: str, first: str, second: str) -> str:
    """A pairwise prompt in the model's own language (Python comments)."""
    return (f"{question}\n\n# Which return statement is right, A or B?\n"
            f"# A: return {first}\n# B: return {second}\n# Answer:")


@dataclass(frozen=True)
class PositionBias:
    """Judging n pairs in both orders: how often the judge says "A", how often its pick is the
    same answer in both orders, and its accuracy in each order (the good answer first / second)."""

    first_rate: float
    consistency: float
    accuracy_good_first: float
    accuracy_good_second: float


def judge_margins(model: torch.nn.Module, tokenizer, prompts: Sequence[str],
                  scorer: Callable = loglikelihood) -> list[float]:
    """log p(" A") - log p(" B") after each prompt (> 0: the judge picks A)."""
    requests = [Request(p, f" {c}") for p in prompts for c in "AB"]
    s = scorer(model, tokenizer, requests)
    return [s[2 * i].logprob - s[2 * i + 1].logprob for i in range(len(prompts))]


def position_bias(model: torch.nn.Module, tokenizer,
                  pairs: Sequence[tuple[str, str, str]], scorer: Callable = loglikelihood,
                  ) -> PositionBias:
    """Judge each (question, good, bad) twice: good answer as A, then as B."""
    if not pairs:
        raise ValueError("no pairs to judge")
    fwd = judge_margins(model, tokenizer, [judge_prompt(q, g, b) for q, g, b in pairs], scorer)
    rev = judge_margins(model, tokenizer, [judge_prompt(q, b, g) for q, g, b in pairs], scorer)
    n = len(pairs)
    says_a = [m > 0 for m in fwd + rev]
    picks_good_fwd, picks_good_rev = [m > 0 for m in fwd], [m <= 0 for m in rev]
    return PositionBias(
        first_rate=sum(says_a) / (2 * n),
        consistency=sum(x == y for x, y in zip(picks_good_fwd, picks_good_rev)) / n,
        accuracy_good_first=sum(picks_good_fwd) / n,
        accuracy_good_second=sum(picks_good_rev) / n,
    )


__all__ = ["PositionBias", "judge_margins", "judge_prompt", "position_bias"]
