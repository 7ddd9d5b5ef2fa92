"""Sampling from a language model: temperature, top-k and nucleus (top-p) filtering.

This is the plain loop that re-reads the whole window every step (chapter 08 adds the KV cache;
chapter 09 serves it). Nucleus sampling: Holtzman et al., "The Curious Case of Neural Text
Degeneration", arXiv:1904.09751. Taught in chapter 02 (solutions/02_gpt).
"""

from __future__ import annotations

import torch

from llmlab.nn.functional import softmax


def filter_logits(
    logits: torch.Tensor, top_k: int | None = None, top_p: float | None = None
) -> torch.Tensor:
    """Set logits outside the top-k / the smallest set with probability >= top_p to -inf.

    logits: (batch, vocab) -> (batch, vocab)
    """
    if top_k is not None:
        kth = torch.topk(logits, min(top_k, logits.shape[-1]), dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        cum = softmax(sorted_logits, dim=-1).cumsum(-1)
        drop = cum - softmax(sorted_logits, dim=-1) >= top_p  # mass before this token >= p
        logits = logits.masked_fill(drop.scatter(-1, order, drop), float("-inf"))
    return logits


def sample_from(probs: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """One draw per row: probs (batch, vocab) -> ids (batch, 1) on probs' device.

    The draw happens on the generator's device (a CPU generator drives GPU decoding too), so a
    seeded run samples the same tokens on any device.
    """
    where = generator.device if generator is not None else probs.device
    return torch.multinomial(probs.to(where), 1, generator=generator).to(probs.device)


@torch.no_grad()
def generate(
    model: torch.nn.Module,
    idx: torch.Tensor,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
    eos_id: int | None = None,
) -> torch.Tensor:
    """Append ``max_new_tokens`` sampled tokens. idx: (batch, seq) -> (batch, seq + new).

    ``temperature=0`` is greedy decoding. The window is cropped to ``model.config.block_size``.
    Stops early when every row has produced ``eos_id``.
    """
    if idx.dim() != 2:
        raise ValueError(f"generate expects idx (batch, seq), got {tuple(idx.shape)}")
    block = model.config.block_size
    done = torch.zeros(idx.shape[0], dtype=torch.bool, device=idx.device)
    for _ in range(max_new_tokens):
        logits = model(idx[:, -block:])[:, -1, :].float()  # (batch, vocab)
        if temperature == 0:
            nxt = logits.argmax(-1, keepdim=True)
        else:
            probs = softmax(filter_logits(logits / temperature, top_k, top_p), dim=-1)
            nxt = sample_from(probs, generator)
        idx = torch.cat((idx, nxt), dim=1)
        if eos_id is not None:
            done |= nxt.squeeze(1) == eos_id
            if bool(done.all()):
                break
    return idx
