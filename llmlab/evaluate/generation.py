"""Generation for evaluation: sampled or greedy continuations cut at stop sequences.

A benchmark asks for text "until" a stop sequence (lm-eval's ``generate_until``: for code, the
start of the next top-level statement). Tokens do not align with stop strings — one token may
hold the end of the answer and the start of the stop — so the stop is found in the decoded text
and everything from it on is cut. Sampling draws ``n`` continuations per prompt in one batch
(seeded), which pass@k needs; ``temperature=0`` is greedy decoding.
Taught in chapter 11 (solutions/11_eval).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import torch

from llmlab.model.sampling import SamplingParams

GREEDY = SamplingParams(max_new_tokens=48, temperature=0.0, seed=0)
CODE_STOPS = ("\ndef ", "\nclass ", "\nif __name__", "\nprint(", "\n#", "\n@", "\nassert")


def truncate_at_stop(text: str, stop: Sequence[str]) -> str:
    """``text`` up to (not including) the earliest occurrence of any stop sequence."""
    cut = min((i for i in (text.find(s) for s in stop if s) if i >= 0), default=len(text))
    return text[:cut]


@torch.no_grad()
def generate_until(model: torch.nn.Module, tokenizer, prompt: str, stop: Sequence[str] = CODE_STOPS,
                   params: SamplingParams | None = None, *, n: int = 1, **sampling) -> list[str]:
    """``n`` continuations of ``prompt``, each cut at the first stop sequence. ``params`` (default
    greedy, 48 new tokens, seed 0) with keyword overrides named like its fields, as
    ``llmlab.model.generate`` takes them; the ``n`` rows are drawn in one seeded batch."""
    from llmlab.model import generate

    params = replace(params or GREEDY, **sampling)
    if n < 1 or params.max_new_tokens < 1:
        raise ValueError(f"need n >= 1 and max_new_tokens >= 1, got n={n}, {params.max_new_tokens}")
    device = next(model.parameters()).device
    ids = tokenizer.encode(prompt)
    window = model.config.block_size - params.max_new_tokens
    idx = torch.tensor([ids[-window:]] * n, device=device)
    out = generate(model, idx, params)
    return [truncate_at_stop(tokenizer.decode(row[idx.shape[1]:].tolist()), stop) for row in out]


__all__ = ["CODE_STOPS", "GREEDY", "generate_until", "truncate_at_stop"]
