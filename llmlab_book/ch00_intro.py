"""Chapter 00 (solutions/00_intro): the warm-up's reference answers and its catalogue.

Three small tensor idioms every later chapter leans on: a numerically stable softmax, splitting
a model dimension into attention heads with einops, and a mean over the positions a mask keeps.
llmlab has no function of its own for the last two, so the chapter checks against these; the
catalogue lists the wrong answers learners write for each (see :mod:`llmlab_book.catalogue`).
"""

from __future__ import annotations

import torch
from einops import rearrange

from llmlab_book.catalogue import Catalogue, Mistake

# ------------------------------------------------------------------ the reference answers


def stable_softmax(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """softmax(x)_i = exp(x_i - max x) / sum_j exp(x_j - max x), along ``dim``.

    Subtracting the max leaves the result unchanged and keeps ``exp`` from overflowing.
    """
    z = x - x.amax(dim=dim, keepdim=True)
    e = z.exp()
    return e / e.sum(dim=dim, keepdim=True)


def split_heads(x: torch.Tensor, n_heads: int) -> torch.Tensor:
    """(batch, seq, n_heads * d_head) -> (batch, n_heads, seq, d_head)."""
    if x.dim() != 3 or x.shape[-1] % n_heads:
        raise ValueError(f"expected (batch, seq, d_model) with d_model divisible by {n_heads}, "
                         f"got {tuple(x.shape)}")
    return rearrange(x, "b s (h d) -> b h s d", h=n_heads)


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of x over the sequence, counting only positions where ``mask`` is True.

    x: (batch, seq, d), mask: (batch, seq) bool -> (batch, d). A row with no kept position
    gives zeros (not NaN).
    """
    m = mask.to(x.dtype).unsqueeze(-1)                    # (batch, seq, 1)
    return (x * m).sum(dim=1) / m.sum(dim=1).clamp_min(1.0)


# ------------------------------------------------------------------ the catalogue: 0.1 softmax


def softmax_without_max(x, dim=-1):
    e = x.exp()
    return e / e.sum(dim=dim, keepdim=True)


def softmax_summing_everything(x, dim=-1):
    e = (x - x.amax(dim=dim, keepdim=True)).exp()
    return e / e.sum()


def softmax_on_the_last_dim(x, dim=-1):
    e = (x - x.amax(-1, keepdim=True)).exp()
    return e / e.sum(-1, keepdim=True)


# ------------------------------------------------------------------ 0.2 split_heads


def split_heads_d_h(x, n_heads):
    if x.shape[-1] % n_heads:
        raise ValueError("d_model is not divisible by n_heads")
    return rearrange(x, "b s (d h) -> b h s d", h=n_heads)


def split_heads_by_reshape(x, n_heads):
    if x.shape[-1] % n_heads:
        raise ValueError("d_model is not divisible by n_heads")
    b, s, d_model = x.shape
    return x.reshape(b, n_heads, s, d_model // n_heads)


def split_heads_unchecked(x, n_heads):
    return x.view(x.shape[0], x.shape[1], n_heads, -1).transpose(1, 2)


# ------------------------------------------------------------------ 0.3 masked_mean


def masked_mean_over_seq(x, mask):
    return (x * mask.unsqueeze(-1)).sum(1) / x.shape[1]


def masked_mean_ignoring_mask(x, mask):
    return x.mean(1)


def masked_mean_unclamped(x, mask):
    m = mask.to(x.dtype).unsqueeze(-1)
    return (x * m).sum(1) / m.sum(1)


CATALOGUE = Catalogue({
    "softmax": [
        Mistake("exponentiating without subtracting the max first", softmax_without_max),
        Mistake("normalising by the sum over the whole tensor instead of along `dim`",
                softmax_summing_everything),
        Mistake("the max and the sum along the last dimension whatever `dim` is",
                softmax_on_the_last_dim),
    ],
    "split_heads": [
        Mistake("'(d h)' instead of '(h d)': head h takes every n_heads-th feature", split_heads_d_h),
        Mistake("a reshape to (batch, n_heads, seq, d_head) without moving the head axis",
                split_heads_by_reshape),
        Mistake("no ValueError when n_heads does not divide d_model", split_heads_unchecked,
                says="expected it to raise ValueError"),
    ],
    "masked_mean": [
        Mistake("dividing by the sequence length instead of the number of kept positions",
                masked_mean_over_seq),
        Mistake("the mean over every position, masked ones included", masked_mean_ignoring_mask),
        Mistake("dividing by the count without clamping it: a row with nothing kept gives 0/0",
                masked_mean_unclamped),
    ],
})
