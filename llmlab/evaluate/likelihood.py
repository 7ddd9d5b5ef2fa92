"""Log-likelihood of a continuation given a context: the request every likelihood-based benchmark
is made of (multiple choice, perplexity, judges, membership tests).

The conventions are EleutherAI's lm-evaluation-harness (Gao et al., "The Language Model
Evaluation Harness", arXiv:2405.14782; ``HFLM._encode_pair`` and ``_loglikelihood_tokens``), so a
number computed here is the number ``lm-eval`` prints for the same model and task:

- trailing whitespace of the context moves to the front of the continuation (BPE tokenizers
  attach a space to the word after it, so ``"x ="`` + ``" 1"`` is scored, not ``"x = "`` + ``"1"``);
- the continuation's tokens are those of ``context + continuation`` after the context's tokens
  (tokenizing the continuation alone would split the join differently);
- an empty context is replaced by one prefix token (end-of-text), so the first token is scored;
- an input longer than the context window keeps its last ``max_length`` tokens;
- ``is_greedy``: every continuation token is the argmax at its position.

Rows of a batch are right-padded: a causal model's logits at real positions do not see padding.
Taught in chapter 11 (solutions/11_eval).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

EOT = "<|endoftext|>"


@dataclass(frozen=True)
class Request:
    """Score ``continuation`` after ``context`` (both text)."""

    context: str
    continuation: str


@dataclass(frozen=True)
class Loglikelihood:
    """log p(continuation | context) in nats, whether it is the greedy continuation, its tokens."""

    logprob: float
    is_greedy: bool
    n_tokens: int


def prefix_token_id(tokenizer) -> int:
    """The token an empty context becomes: the tokenizer's end-of-text (lm-eval's BOS/EOS rule)."""
    special = getattr(tokenizer, "special_ids", {})
    if EOT in special:
        return special[EOT]
    for name in ("bos_token_id", "eos_token_id"):  # a Hugging Face tokenizer
        if getattr(tokenizer, name, None) is not None:
            return getattr(tokenizer, name)
    raise ValueError("the tokenizer has no end-of-text token; pass prefix_token_id")


def encode_pair(tokenizer, context: str, continuation: str,
                prefix_id: int) -> tuple[list[int], list[int]]:
    """(context ids, continuation ids) with lm-eval's whitespace and join conventions."""
    if context == "":
        return [prefix_id], tokenizer.encode(continuation)
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces:
        continuation = context[-n_spaces:] + continuation
        context = context[:-n_spaces]
    whole = tokenizer.encode(context + continuation)
    ctx = tokenizer.encode(context)
    return ctx, whole[len(ctx):]


def model_max_length(model: torch.nn.Module) -> int:
    """The context window: ``config.block_size`` (llmlab) or ``max_position_embeddings`` (HF)."""
    config = getattr(model, "config", None)
    for name in ("block_size", "max_position_embeddings", "n_positions"):
        if getattr(config, name, None):
            return int(getattr(config, name))
    raise ValueError("cannot tell the model's context window; pass max_length")


def _logits(model: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
    out = model(ids)
    return (out.logits if hasattr(out, "logits") else out).float()


@torch.no_grad()
def score_tokens(model: torch.nn.Module, pairs: Sequence[tuple[list[int], list[int]]],
                 batch_size: int = 16, max_length: int | None = None,
                 progress: Callable | None = None) -> list[Loglikelihood]:
    """Score token-level (context, continuation) pairs; results in the order given.

    Longest inputs first (fewer padded positions per batch, and an out-of-memory error shows at
    once); ``progress`` wraps the batch loop (e.g. ``tqdm``).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    max_length = max_length or model_max_length(model)
    inputs = []
    for ctx, cont in pairs:
        if not cont:
            raise ValueError("a continuation must have at least one token")
        if len(cont) > max_length:
            raise ValueError(f"continuation of {len(cont)} tokens exceeds the window {max_length}")
        inputs.append((ctx + cont)[-(max_length + 1):][:-1])
    order = sorted(range(len(pairs)), key=lambda i: -len(inputs[i]))
    device = next(model.parameters()).device
    results: list[Loglikelihood | None] = [None] * len(pairs)
    starts = range(0, len(order), batch_size)
    for start in progress(starts) if progress else starts:
        chunk = order[start:start + batch_size]
        width = max(len(inputs[i]) for i in chunk)
        batch = torch.zeros(len(chunk), width, dtype=torch.long, device=device)
        for row, i in enumerate(chunk):
            batch[row, :len(inputs[i])] = torch.tensor(inputs[i], device=device)
        logp = _logits(model, batch).log_softmax(-1)  # (rows, width, vocab)
        for row, i in enumerate(chunk):
            cont = pairs[i][1]
            end = len(inputs[i])
            span = logp[row, end - len(cont):end]  # position t predicts token t + 1
            target = torch.tensor(cont, device=device)
            token_lp = span.gather(-1, target[:, None]).squeeze(-1)
            results[i] = Loglikelihood(float(token_lp.sum()), bool((span.argmax(-1) == target).all()),
                                       len(cont))
    return results  # type: ignore[return-value]


def loglikelihood(model: torch.nn.Module, tokenizer, requests: Sequence[Request],
                  batch_size: int = 16, max_length: int | None = None,
                  prefix_id: int | None = None, progress: Callable | None = None,
                  ) -> list[Loglikelihood]:
    """log p(continuation | context) for each request, lm-eval's ``loglikelihood``."""
    prefix_id = prefix_token_id(tokenizer) if prefix_id is None else prefix_id
    pairs = [encode_pair(tokenizer, r.context, r.continuation, prefix_id) for r in requests]
    return score_tokens(model, pairs, batch_size, max_length, progress)


@torch.no_grad()
def token_logprobs(model: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
    """log p(ids[:, t] | ids[:, :t]) for t >= 1. ids: (batch, seq) -> (batch, seq - 1)."""
    if ids.dim() != 2 or ids.shape[1] < 2:
        raise ValueError(f"ids must be (batch, seq >= 2), got {tuple(ids.shape)}")
    logp = _logits(model, ids[:, :-1]).log_softmax(-1)
    return logp.gather(-1, ids[:, 1:, None]).squeeze(-1)


__all__ = ["EOT", "Loglikelihood", "Request", "encode_pair", "loglikelihood", "model_max_length",
           "prefix_token_id", "score_tokens", "token_logprobs"]
