"""Rewards and preference data for the chapter's runs on the book's (Python-code) model.

- Verifiable rewards, checked by a program rather than learned (the RL-from-verifiable-rewards
  setting of DeepSeek-R1, arXiv:2501.12948, and Tulu 3, arXiv:2411.15124): ``return_statement_reward``
  is 1 when the completion's first line is a well-formed ``return <expr>``.
- A hackable proxy: ``keyword_reward`` counts the keyword, so repeating it scores, though the
  code gets worse (reward hacking / overoptimisation: Gao et al. 2022, "Scaling Laws for Reward
  Model Overoptimization", arXiv:2210.10760).
- Preference pairs from real code: the true continuation of a stdlib snippet (chosen) against
  the same tokens shuffled (rejected).

Taught in chapter 06 (solutions/06_align).
"""

from __future__ import annotations

import ast
import random
from collections.abc import Callable

import torch

from llmlab.align.rollout import Rollout


def return_statement_reward(text: str) -> float:
    """1.0 when the first line is ``return <expression>`` that parses as Python, else 0.0."""
    line = text.split("\n", 1)[0].strip()
    if not line.startswith("return "):
        return 0.0
    try:
        node = ast.parse(line).body
    except SyntaxError:
        return 0.0
    return float(len(node) == 1 and isinstance(node[0], ast.Return) and node[0].value is not None)


def keyword_reward(text: str, keyword: str = "return", cap: int = 4) -> float:
    """min(count of ``keyword``, cap) / cap: a proxy that rewards saying it, not using it well."""
    return min(text.count(keyword), cap) / cap


def decode_completions(rollout: Rollout, tok) -> list[str]:
    """The text of each completion up to its mask's end (the EOS token itself dropped)."""
    out = []
    for row, m in zip(rollout.completion.tolist(), rollout.mask.tolist()):
        ids = [t for t, keep in zip(row, m) if keep and t not in tok.special_ids.values()]
        out.append(tok.decode(ids))
    return out


def text_reward(fn: Callable[[str], float], tok) -> Callable[[Rollout], torch.Tensor]:
    """Wrap a str -> float reward as a rollout -> (batch,) reward for the trainers."""
    return lambda ro: torch.tensor([fn(t) for t in decode_completions(ro, tok)])


def code_preference_pairs(tok, texts: list[str], n: int, prompt_len: int = 16, response_len: int = 16,
                          seed: int = 0) -> list[tuple[list[int], list[int], list[int]]]:
    """``n`` (prompt, chosen, rejected) token lists from ``texts``: a random window of real code,
    its true continuation (chosen) and the continuation's tokens shuffled (rejected)."""
    rng = random.Random(seed)
    streams = [ids for ids in (tok.encode(t) for t in texts) if len(ids) > prompt_len + response_len]
    if not streams:
        raise ValueError(f"no text is longer than {prompt_len + response_len} tokens")
    pairs = []
    while len(pairs) < n:
        ids = rng.choice(streams)
        s = rng.randrange(len(ids) - prompt_len - response_len)
        prompt, chosen = ids[s:s + prompt_len], ids[s + prompt_len:s + prompt_len + response_len]
        rejected = chosen[:]
        while rejected == chosen and len(set(chosen)) > 1:
            rng.shuffle(rejected)
        if rejected != chosen:
            pairs.append((prompt, chosen, rejected))
    return pairs
