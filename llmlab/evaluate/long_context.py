"""Does the model use its whole context? A needle at every depth, and copying across distance.

- **Needle in a haystack** (Kamradt 2023; RULER, Hsieh et al., arXiv:2404.06654): a fact — here
  ``SECRET = "<word>"`` — is planted at a relative depth of a long held-out code file, and the
  model must pick the planted word among others at the end (multiple choice by log-likelihood).
  Accuracy by depth shows where in the window the model still finds it.
- **Copying** (induction heads, Olsson et al., arXiv:2209.11895): a random token sequence shown
  twice; the second copy is predictable only by looking back, so its log-likelihood against the
  first copy's measures how far back the model reads.
Taught in chapter 11 (solutions/11_eval).
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import torch

from llmlab.evaluate.likelihood import token_logprobs
from llmlab.evaluate.multiple_choice import MCItem


def needle_item(haystack: str, needle: str, decoys: Sequence[str], depth: float, tokenizer,
                max_tokens: int, seed: int = 0) -> MCItem:
    """``haystack`` cut to fit ``max_tokens`` with ``SECRET = "needle"`` inserted at ``depth``
    (0 = first line, 1 = last) and the question ``assert SECRET ==`` at the end."""
    if not 0 <= depth <= 1:
        raise ValueError(f"depth must be in [0, 1], got {depth}")
    question = '\n\nassert SECRET =='
    fact = f'SECRET = "{needle}"\n'
    budget = max_tokens - len(tokenizer.encode(fact + question)) - 8
    lines, kept, used = haystack.splitlines(keepends=True), [], 0
    for line in lines:
        n = len(tokenizer.encode(line))
        if used + n > budget:
            break
        kept.append(line)
        used += n
    at = round(depth * len(kept))
    text = "".join(kept[:at]) + fact + "".join(kept[at:])
    choices = [f'"{w}"' for w in decoys] + [f'"{needle}"']
    rng = random.Random(seed)
    rng.shuffle(choices)
    return MCItem(text.rstrip("\n") + question, tuple(choices), choices.index(f'"{needle}"'))


@torch.no_grad()
def copy_logprobs(model: torch.nn.Module, length: int, vocab: Sequence[int],
                  seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A random sequence of ``length`` ids from ``vocab`` shown twice: the per-token
    log-probabilities of the first copy (length - 1,) and of the second (length,)."""
    if 2 * length > model.config.block_size:
        raise ValueError(f"two copies of {length} tokens exceed the window {model.config.block_size}")
    g = torch.Generator().manual_seed(seed)
    vocab = torch.as_tensor(list(vocab))
    seq = vocab[torch.randint(len(vocab), (length,), generator=g)]
    device = next(model.parameters()).device
    lp = token_logprobs(model, torch.cat([seq, seq])[None].to(device))[0]
    return lp[:length - 1], lp[length - 1:]


__all__ = ["copy_logprobs", "needle_item"]
