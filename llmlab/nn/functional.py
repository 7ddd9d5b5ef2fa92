"""Numerically stable softmax and cross-entropy, and the GELU of GPT-2, written out.

Each function is the readable definition a learner can check line by line; the model uses
these same functions, so what the chapter teaches is what trains the book's model.
Taught in chapter 02 (solutions/02_gpt).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def softmax(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """softmax(x)_i = exp(x_i - max x) / sum_j exp(x_j - max x).

    Subtracting the max changes nothing mathematically but keeps ``exp`` from overflowing
    (``exp(89.) = inf`` in fp32). Rows that are entirely ``-inf`` (fully masked) return 0.
    x: (..., n) -> (..., n)
    """
    m = x.amax(dim=dim, keepdim=True)
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))  # all -inf row: avoid inf - inf
    e = torch.exp(x - m)
    s = e.sum(dim=dim, keepdim=True)
    return e / torch.where(s == 0, torch.ones_like(s), s)


def log_softmax(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """log softmax(x) = x - logsumexp(x), with logsumexp = m + log sum exp(x - m).

    x: (..., n) -> (..., n)
    """
    m = x.amax(dim=dim, keepdim=True).detach()
    return x - m - torch.log(torch.exp(x - m).sum(dim=dim, keepdim=True))


def _check_ce_args(logits: torch.Tensor, targets: torch.Tensor, reduction: str) -> None:
    if logits.shape[:-1] != targets.shape:
        raise ValueError(
            f"cross_entropy: logits (..., vocab) and targets (...) must agree on the leading "
            f"dims; got logits {tuple(logits.shape)} and targets {tuple(targets.shape)}"
        )
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"cross_entropy: reduction must be mean|sum|none, got {reduction!r}")


def cross_entropy(
    logits: torch.Tensor,
    targets: torch.Tensor,
    ignore_index: int = -100,
    reduction: str = "mean",
) -> torch.Tensor:
    """Mean negative log-likelihood of ``targets`` under ``softmax(logits)``, in nats.

    loss_i = logsumexp(logits_i) - logits_i[target_i]; positions whose target equals
    ``ignore_index`` are left out of the mean (padding, prompt tokens in fine-tuning).
    logits: (..., vocab) float; targets: (...) long -> scalar (``"mean"``/``"sum"``) or (...)
    (``"none"``). The logsumexp is computed in fp32 even when logits are bf16.
    """
    _check_ce_args(logits, targets, reduction)
    logits = logits.float()
    valid = targets != ignore_index
    safe_targets = torch.where(valid, targets, torch.zeros_like(targets))
    lse = torch.logsumexp(logits, dim=-1)  # (...)
    picked = logits.gather(-1, safe_targets.unsqueeze(-1)).squeeze(-1)  # (...)
    loss = torch.where(valid, lse - picked, torch.zeros_like(lse))
    if reduction == "none":
        return loss
    if reduction == "sum":
        return loss.sum()
    return loss.sum() / valid.sum().clamp(min=1)


def fast_cross_entropy(
    logits: torch.Tensor,
    targets: torch.Tensor,
    ignore_index: int = -100,
    reduction: str = "mean",
) -> torch.Tensor:
    """``cross_entropy`` through PyTorch's fused log-softmax + NLL kernels (about twice as fast
    on CPU; tested to agree). Same shapes and conventions; training uses this one."""
    _check_ce_args(logits, targets, reduction)
    flat = logits.float().reshape(-1, logits.shape[-1])
    loss = F.cross_entropy(flat, targets.reshape(-1), ignore_index=ignore_index,
                           reduction="none" if reduction == "none" else "sum")
    if reduction == "none":
        return loss.view(targets.shape)
    if reduction == "sum":
        return loss
    return loss / (targets != ignore_index).sum().clamp(min=1)


def gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    """GELU with the tanh approximation GPT-2 uses ("gelu_new" in transformers).

    0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) — Hendrycks & Gimpel, "Gaussian Error
    Linear Units (GELUs)", arXiv:1606.08415. x: any shape -> same shape.
    """
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x.pow(3))))


def silu(x: torch.Tensor) -> torch.Tensor:
    """SiLU / swish: x * sigmoid(x) (Ramachandran et al., arXiv:1710.05941). Any shape."""
    return x * torch.sigmoid(x)
