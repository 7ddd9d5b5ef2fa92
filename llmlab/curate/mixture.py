"""Domain mixing: how many tokens each source contributes, and how many times it is repeated.

A training set is a mixture of domains (web, code, books, papers, ...). Three decisions set it:

- **weights** w_d: the fraction of training tokens drawn from domain d. Set by hand (GPT-3's
  Common Crawl 60 %, WebText2 22 %, Books 16 %, Wikipedia 3 %), by *temperature sampling*
  w_d ∝ n_d^(1/T) over the domain sizes n_d (T = 1: proportional; T → ∞: uniform; mT5 and
  XLM-R use this for languages, Arivazhagan et al., arXiv:1907.05019), or learned (DoReMi,
  Xie et al., arXiv:2305.10429);
- **up/down-sampling**: with a budget of D tokens, domain d supplies w_d·D tokens: more than it
  has means repeating it, fewer means leaving part unused;
- **epochs per domain** e_d = w_d·D / n_d. Muennighoff et al. ("Scaling Data-Constrained Language
  Models", arXiv:2305.16264) find up to ~4 epochs of a domain cost almost nothing; beyond ~16
  the repeated tokens are worth little.

:func:`sample_mixture` draws documents to a budget with those epochs: whole passes over a
domain's shuffled documents, then a random part of the last pass. Taught in chapter 10
(solutions/10_data).
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence


def temperature_weights(sizes: Mapping[str, float], temperature: float = 1.0) -> dict[str, float]:
    """w_d ∝ n_d^(1/T), normalised to sum to 1."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if any(n < 0 for n in sizes.values()) or not sum(sizes.values()):
        raise ValueError(f"sizes must be >= 0 and not all 0, got {dict(sizes)}")
    raw = {d: n ** (1.0 / temperature) for d, n in sizes.items()}
    total = sum(raw.values())
    return {d: v / total for d, v in raw.items()}


def mixture_plan(sizes: Mapping[str, float], weights: Mapping[str, float],
                 budget: float) -> dict[str, dict[str, float]]:
    """Per domain: ``tokens`` it contributes (w_d·budget) and ``epochs`` over it (tokens / n_d)."""
    if set(sizes) != set(weights):
        raise ValueError(f"sizes and weights must name the same domains: {sorted(sizes)} vs "
                         f"{sorted(weights)}")
    total = sum(weights.values())
    if total <= 0:
        raise ValueError(f"weights must sum to > 0, got {dict(weights)}")
    plan = {}
    for d, n in sizes.items():
        tokens = weights[d] / total * budget
        plan[d] = {"tokens": tokens, "epochs": tokens / n if n else float("inf")}
    return plan


def sample_mixture(domains: Mapping[str, Sequence[str]], weights: Mapping[str, float],
                   budget_chars: int, seed: int = 0) -> list[tuple[str, str]]:
    """(domain, document) pairs whose lengths add up to about ``budget_chars``, each domain
    giving its share: whole shuffled passes over its documents, then part of one more pass;
    the result is shuffled."""
    rng = random.Random(seed)
    sizes = {d: sum(map(len, docs)) for d, docs in domains.items()}
    plan = mixture_plan(sizes, weights, budget_chars)
    out: list[tuple[str, str]] = []
    for d, docs in domains.items():
        want, got = plan[d]["tokens"], 0
        while got < want and docs:
            order = list(docs)
            rng.shuffle(order)
            for doc in order:
                if got >= want:
                    break
                out.append((d, doc))
                got += len(doc)
    rng.shuffle(out)
    return out
