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

import torch

CODE_STOPS = ("\ndef ", "\nclass ", "\nif __name__", "\nprint(", "\n#", "\n@", "\nassert")


def truncate_at_stop(text: str, stop: Sequence[str]) -> str:
    """``text`` up to (not including) the earliest occurrence of any stop sequence."""
    cut = min((i for i in (text.find(s) for s in stop if s) if i >= 0), default=len(text))
    return text[:cut]


def decode(model: torch.nn.Module, idx: torch.Tensor, max_new_tokens: int, temperature: float,
           top_p: float | None, generator: torch.Generator | None) -> torch.Tensor:
    """The book's decoding API, in one place: ``llmlab.model.generate``. idx: (batch, seq)."""
    from llmlab.model import generate

    return generate(model, idx, max_new_tokens=max_new_tokens, temperature=temperature,
                    top_p=1.0 if top_p is None else top_p, generator=generator)


@torch.no_grad()
def generate_until(model: torch.nn.Module, tokenizer, prompt: str, stop: Sequence[str] = CODE_STOPS,
                   max_new_tokens: int = 48, temperature: float = 0.0, top_p: float | None = None,
                   n: int = 1, seed: int = 0) -> list[str]:
    """``n`` continuations of ``prompt``, each cut at the first stop sequence."""
    if n < 1 or max_new_tokens < 1:
        raise ValueError(f"need n >= 1 and max_new_tokens >= 1, got n={n}, {max_new_tokens}")
    device = next(model.parameters()).device
    ids = tokenizer.encode(prompt)
    window = model.config.block_size - max_new_tokens
    idx = torch.tensor([ids[-window:]] * n, device=device)
    generator = torch.Generator().manual_seed(seed) if temperature > 0 else None
    out = decode(model, idx, max_new_tokens, temperature, top_p, generator)
    return [truncate_at_stop(tokenizer.decode(row[idx.shape[1]:].tolist()), stop) for row in out]


__all__ = ["CODE_STOPS", "decode", "generate_until", "truncate_at_stop"]
