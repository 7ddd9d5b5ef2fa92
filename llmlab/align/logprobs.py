"""The tensor helpers every alignment method shares: prompt/response tokenization with a
response mask, per-token log-probabilities and entropy, and masked reductions.

The semantics follow Stanford CS336's alignment assignment (spring 2025, assignment 5):
``tokenize_prompt_and_output`` shifts by one so ``labels[t]`` is the token predicted at ``t`` and
``response_mask`` marks the labels that belong to the response; ``masked_normalize`` sums over the
mask and divides by a constant. Reinforcement-learning fine-tuning of language models in this
form is Ouyang et al. 2022, "Training language models to follow instructions with human
feedback", arXiv:2203.02155. Taught in chapter 06 (solutions/06_align).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def tokenize_prompt_and_output(
    prompt_strs: list[str], output_strs: list[str], tokenizer, pad_id: int | None = None
) -> dict[str, torch.Tensor]:
    """Tokenize prompt and output separately, concatenate, right-pad, shift by one.

    -> ``input_ids`` (batch, L-1), ``labels`` (batch, L-1), ``response_mask`` (batch, L-1) bool,
    where L is the longest prompt+output. ``response_mask[i, t]`` is True when ``labels[i, t]`` is
    an output token. ``pad_id`` defaults to ``tokenizer.pad_token_id`` or the last special id.
    """
    if len(prompt_strs) != len(output_strs):
        raise ValueError(f"got {len(prompt_strs)} prompts but {len(output_strs)} outputs")
    if pad_id is None:
        pad_id = getattr(tokenizer, "pad_token_id", None)
        if pad_id is None:
            pad_id = max(tokenizer.special_ids.values())
    return prompt_response_batch([tokenizer.encode(p) for p in prompt_strs],
                                 [tokenizer.encode(o) for o in output_strs], pad_id)


def prompt_response_batch(prompts: list[list[int]], responses: list[list[int]], pad_id: int
                          ) -> dict[str, torch.Tensor]:
    """``tokenize_prompt_and_output`` for token lists: concatenate, right-pad, shift by one."""
    if len(prompts) != len(responses):
        raise ValueError(f"got {len(prompts)} prompts but {len(responses)} responses")
    seqs = [p + r for p, r in zip(prompts, responses)]
    L = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), L), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), L), dtype=torch.bool)
    for i, (p, s) in enumerate(zip(prompts, seqs)):
        ids[i, : len(s)] = torch.tensor(s)
        mask[i, len(p): len(s)] = True
    return {"input_ids": ids[:, :-1], "labels": ids[:, 1:], "response_mask": mask[:, 1:]}


def compute_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of the next-token distribution, in nats. logits: (..., vocab) -> (...).

    H = logsumexp(z) - sum_v softmax(z)_v z_v, computed stably from the logits.
    """
    logits = logits.float()
    return torch.logsumexp(logits, -1) - (F.softmax(logits, -1) * logits).sum(-1)


def token_log_probs(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """log p(labels[t] | ...) from logits. logits: (batch, T, vocab), labels: (batch, T) -> (batch, T).

    Labels equal to -100 (ignored) give 0.
    """
    if logits.shape[:-1] != labels.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and labels {tuple(labels.shape)} disagree")
    safe = labels.clamp(min=0)
    lp = torch.gather(F.log_softmax(logits.float(), -1), -1, safe.unsqueeze(-1)).squeeze(-1)
    return lp.masked_fill(labels < 0, 0.0)


def get_response_log_probs(
    model: torch.nn.Module, input_ids: torch.Tensor, labels: torch.Tensor,
    return_token_entropy: bool = False, context=None,
) -> dict[str, torch.Tensor]:
    """Per-token log-probabilities (and entropies) of ``labels`` under ``model``.

    model: llmlab ``GPT`` (returns logits) or a Hugging Face causal LM (returns ``.logits``).
    input_ids, labels: (batch, T) -> {"log_probs": (batch, T), "token_entropy": (batch, T)}.
    ``context``: an llmlab model's step context (e.g. ``packed_context`` of a packed batch).
    """
    out = model(input_ids) if context is None else model(input_ids, context)
    logits = out.logits if hasattr(out, "logits") else out
    res = {"log_probs": token_log_probs(logits, labels)}
    if return_token_entropy:
        res["token_entropy"] = compute_entropy(logits)
    return res


def masked_normalize(
    tensor: torch.Tensor, mask: torch.Tensor, normalize_constant: float = 1.0, dim: int | None = None
) -> torch.Tensor:
    """Sum of ``tensor`` where ``mask`` is set, divided by ``normalize_constant``.

    tensor, mask: same shape; ``dim=None`` sums everything -> scalar, else reduces ``dim``.
    """
    if tensor.shape != mask.shape:
        raise ValueError(f"tensor {tuple(tensor.shape)} and mask {tuple(mask.shape)} must match")
    masked = tensor * mask.to(tensor.dtype)
    total = masked.sum() if dim is None else masked.sum(dim)
    return total / normalize_constant


def masked_mean(tensor: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Mean of ``tensor`` over positions where ``mask`` is set (all, or along ``dim``).

    An empty slice (a mask with no set entry there) has no mean: it gives NaN, as
    ``torch.mean`` of no elements does, never a silent 0. Callers that may meet an empty slice
    decide what it means (``grpo_loss`` gives an empty completion no weight; the losses raise
    ``ValueError`` on a batch whose mask keeps no token).
    """
    if tensor.shape != mask.shape:
        raise ValueError(f"tensor {tuple(tensor.shape)} and mask {tuple(mask.shape)} must match")
    m = mask.to(tensor.dtype)
    if dim is None:
        return (tensor * m).sum() / m.sum()
    return (tensor * m).sum(dim) / m.sum(dim)


def require_tokens(mask: torch.Tensor, what: str = "mask") -> None:
    """Raise ``ValueError`` when ``mask`` keeps no position: a loss over no token is undefined."""
    if not bool(mask.bool().any()):
        raise ValueError(f"{what} keeps no token (all zeros, shape {tuple(mask.shape)}): "
                         "there is nothing to average the loss over")


def masked_whiten(values: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True,
                  eps: float = 1e-8) -> torch.Tensor:
    """(x - mean) / std over the masked entries (unbiased variance), as PPO whitens advantages.

    values, mask: (batch, T) -> (batch, T). ``shift_mean=False`` adds the mean back (rewards).
    """
    mean = masked_mean(values, mask)
    centered = values - mean
    n = mask.to(values.dtype).sum()
    if n < 2:
        raise ValueError(f"whitening needs at least 2 masked entries, got {int(n)}")
    var = masked_mean(centered**2, mask) * n / (n - 1)  # Bessel's correction
    whitened = centered * torch.rsqrt(var + eps)
    return whitened if shift_mean else whitened + mean


def sequence_log_probs(per_token: torch.Tensor, mask: torch.Tensor, average: bool = False) -> torch.Tensor:
    """Sum (or mean, ``average=True``) of per-token log-probs over the response. (batch, T) -> (batch,)."""
    return masked_mean(per_token, mask, dim=-1) if average else masked_normalize(per_token, mask, dim=-1)
