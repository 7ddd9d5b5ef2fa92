"""Calibrated membership signals: was a text in the model's training data?

Min-K% probability (:mod:`llmlab.evaluate.contamination`) ranks texts by how likely the model
finds them, and so mostly measures how *easy* a text is: a short, repetitive function is likely
under any model, seen or not. The signals here divide that intrinsic difficulty out.

- **zlib ratio** (Carlini et al., "Extracting Training Data from Large Language Models",
  arXiv:2012.07805, section 5.2): the model's loss (mean negative log-probability per token,
  nats) divided by the text's zlib-compressed length in bytes — compressible text is easy for
  everyone, so a low loss on an incompressible text is the surprise. Lower means member.
- **reference calibration** (same paper, "Comparing to Other Neural Language Models"): the
  target model's loss minus a reference model's loss on the same tokens. Both models find easy
  text easy; only the target has seen the members. Lower means member.
- **Min-K%++** (Zhang et al., "Min-K%++: Improved Baseline for Detecting Pre-Training Data from
  Large Language Models", arXiv:2404.02936): each token's log-probability standardised by the
  model's own next-token distribution at that position, ``(log p(x_t) - mu_t) / sigma_t`` with
  ``mu_t = E_{z~p}[log p(z)]`` and ``sigma_t^2 = Var_{z~p}[log p(z)]``, then the Min-K% mean of
  those scores. Training makes a seen token a local maximum of the likelihood, which shows as a
  high score relative to the other candidates at that position. Higher means member.

The **reference model** is :class:`BigramReference`, a token bigram model (interpolated with an
add-one unigram, Jelinek and Mercer's smoothing) counted on the target's training corpus with
the candidate texts' files left out. It is the offline analogue of the paper's smaller model
trained on similar data: it knows which tokens and token pairs are common in Python — the
intrinsic difficulty we want to divide out — but it cannot have memorised any candidate, because
it never counted one, and with one-token context it could not memorise a whole function anyway.
It needs no download and uses the target's tokenizer, so the two losses are over the same tokens.
Taught in chapter 11 (solutions/11_eval).
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from llmlab.evaluate.contamination import min_k_prob
from llmlab.evaluate.likelihood import _logits, prefix_token_id
from llmlab.evaluate.statistics import Interval


@dataclass(frozen=True)
class TokenStats:
    """Per-token statistics of one text under a model, each (T,): ``logprob`` = log p(x_t), and
    ``mu``/``sigma`` = mean and standard deviation of log p(z) for z drawn from the model's
    next-token distribution at position t."""

    logprob: torch.Tensor
    mu: torch.Tensor
    sigma: torch.Tensor


def distribution_stats(logits: torch.Tensor, targets: torch.Tensor) -> TokenStats:
    """:class:`TokenStats` from next-token logits (T, V) and the tokens that followed (T,)."""
    if logits.dim() != 2 or targets.shape != logits.shape[:1]:
        raise ValueError(f"need logits (T, V) and targets (T,), got {tuple(logits.shape)} and "
                         f"{tuple(targets.shape)}")
    logp = logits.double().log_softmax(-1)
    p = logp.exp()
    mu = (p * logp).sum(-1)
    var = (p * logp.square()).sum(-1) - mu.square()
    return TokenStats(logp.gather(-1, targets[:, None]).squeeze(-1), mu, var.clamp_min(0).sqrt())


@torch.no_grad()
def text_token_stats(model: torch.nn.Module, tokenizer, text: str,
                     max_length: int | None = None) -> TokenStats:
    """:class:`TokenStats` of ``text``'s first ``max_length`` tokens (after a prefix token), from
    one forward pass; ``logprob`` equals :func:`llmlab.evaluate.text_token_logprobs`."""
    ids = text_ids(tokenizer, text, max_length or model.config.block_size)
    device = next(model.parameters()).device
    x = torch.tensor([ids], device=device)
    return distribution_stats(_logits(model, x[:, :-1])[0].cpu(), x[0, 1:].cpu())


def text_ids(tokenizer, text: str, max_length: int) -> list[int]:
    """The prefix token then ``text``'s first ``max_length`` token ids (what every signal scores)."""
    ids = tokenizer.encode(text)[:max_length]
    if not ids:
        raise ValueError("the text has no tokens")
    return [prefix_token_id(tokenizer)] + ids


def loss(token_lp: torch.Tensor) -> float:
    """Mean negative log-probability (nats per token) of a (T,) tensor of log-probabilities."""
    if token_lp.dim() != 1 or token_lp.numel() == 0:
        raise ValueError(f"need a non-empty (T,) tensor, got {tuple(token_lp.shape)}")
    return float(-token_lp.double().mean())


def zlib_ratio(token_lp: torch.Tensor, text: str) -> float:
    """Carlini et al.'s zlib ratio: ``loss(token_lp)`` over the length in bytes of
    ``zlib.compress(text)`` (UTF-8, default level). Lower means member."""
    if not text:
        raise ValueError("the text is empty")
    return loss(token_lp) / len(zlib.compress(text.encode("utf-8")))


def reference_calibrated(token_lp: torch.Tensor, reference_lp: torch.Tensor) -> float:
    """Target loss minus reference loss over the same T tokens (both (T,)). Lower means member."""
    if token_lp.shape != reference_lp.shape:
        raise ValueError(f"target and reference must score the same tokens, got "
                         f"{tuple(token_lp.shape)} and {tuple(reference_lp.shape)}")
    return loss(token_lp) - loss(reference_lp)


def min_k_plus_plus(stats: TokenStats, k: float = 0.2) -> float:
    """Min-K%++: the Min-K% mean of ``(logprob - mu) / sigma``. Higher means member. A position
    whose distribution is a point mass (sigma 0) has logprob = mu there and scores 0."""
    if not (stats.logprob.shape == stats.mu.shape == stats.sigma.shape) or stats.logprob.dim() != 1:
        raise ValueError("logprob, mu and sigma must be (T,) tensors of one shape, got "
                         f"{tuple(stats.logprob.shape)}, {tuple(stats.mu.shape)}, {tuple(stats.sigma.shape)}")
    z = (stats.logprob.double() - stats.mu.double()) / stats.sigma.double().clamp_min(1e-12)
    return min_k_prob(z, k)


@dataclass(frozen=True)
class BigramReference:
    """A token bigram model interpolated with an add-one unigram:
    ``p(b | a) = lam * c(a, b) / c(a) + (1 - lam) * (c(b) + 1) / (N + V)``, the bigram term
    dropped when ``a`` was never seen. Pair counts are kept sparse (sorted codes ``a * V + b``)."""

    vocab_size: int
    unigram: np.ndarray     # (V,) float64: add-one unigram probabilities
    context: np.ndarray     # (V,) int64: c(a), occurrences of a as the first of a pair
    pair_codes: np.ndarray  # (P,) int64, sorted
    pair_counts: np.ndarray  # (P,) int64
    lam: float = 0.7

    @classmethod
    def fit(cls, sequences: Iterable[Sequence[int]], vocab_size: int, lam: float = 0.7) -> BigramReference:
        """Count unigrams and adjacent pairs within each id sequence (documents are separate)."""
        if not 0 <= lam < 1:
            raise ValueError(f"lam must be in [0, 1), got {lam}")
        uni = np.zeros(vocab_size, np.int64)
        ctx = np.zeros(vocab_size, np.int64)
        codes = []
        for seq in sequences:
            a = np.asarray(seq, np.int64)
            if a.size and (a.min() < 0 or a.max() >= vocab_size):
                raise ValueError(f"token ids must be in [0, {vocab_size}), got {a.min()}..{a.max()}")
            uni += np.bincount(a, minlength=vocab_size)
            if a.size > 1:
                ctx += np.bincount(a[:-1], minlength=vocab_size)
                codes.append(a[:-1] * vocab_size + a[1:])
        if not uni.sum():
            raise ValueError("no tokens to count")
        pair_codes, pair_counts = np.unique(np.concatenate(codes) if codes else np.zeros(0, np.int64),
                                            return_counts=True)
        unigram = (uni + 1) / (uni.sum() + vocab_size)
        return cls(vocab_size, unigram, ctx, pair_codes, pair_counts.astype(np.int64), lam)

    def token_logprobs(self, ids: Sequence[int]) -> torch.Tensor:
        """log p(ids[t] | ids[t-1]) for t >= 1: (len(ids) - 1,), like the target's log-probs."""
        a = np.asarray(ids, np.int64)
        if a.ndim != 1 or a.size < 2 or a.min() < 0 or a.max() >= self.vocab_size:
            raise ValueError(f"need >= 2 token ids in [0, {self.vocab_size}), got {a.size}")
        prev, nxt = a[:-1], a[1:]
        code = prev * self.vocab_size + nxt
        pos = np.searchsorted(self.pair_codes, code).clip(max=max(len(self.pair_codes) - 1, 0))
        pair = np.where(self.pair_codes[pos] == code, self.pair_counts[pos], 0) if len(self.pair_codes) \
            else np.zeros_like(code)
        ctx = self.context[prev]
        bigram = np.divide(pair, ctx, out=np.zeros(len(code)), where=ctx > 0)
        lam = np.where(ctx > 0, self.lam, 0.0)
        return torch.from_numpy(np.log(lam * bigram + (1 - lam) * self.unigram[nxt]))


def reference_corpus(texts: Iterable[str], candidates: Iterable[str]) -> list[str]:
    """The ``texts`` (training files) in which no candidate's first line — its ``def`` line —
    occurs: a reference counted on them has never seen a candidate (a common ``def`` line drops a
    file that did not hold the candidate too; that costs counts, never correctness)."""
    keys = {c.strip().splitlines()[0].strip() for c in candidates if c.strip()}
    return [t for t in texts if not any(k in t for k in keys)]


def fit_reference(tokenizer, texts: Iterable[str], vocab_size: int, lam: float = 0.7) -> BigramReference:
    """:class:`BigramReference` counted on ``texts``, each tokenized after the prefix token (as
    :func:`text_ids` scores a candidate), documents counted separately."""
    prefix = prefix_token_id(tokenizer)
    return BigramReference.fit(([prefix] + tokenizer.encode(t) for t in texts), vocab_size, lam)


def auroc_interval(positives: Sequence[float], negatives: Sequence[float], n_resamples: int = 2000,
                   confidence: float = 0.9, rng: np.random.Generator | int | None = 0) -> Interval:
    """AUROC with a percentile bootstrap interval that resamples the two sets independently
    (``scipy.stats.bootstrap`` on two unpaired samples does the same)."""
    pos, neg = np.asarray(positives, float), np.asarray(negatives, float)
    if pos.ndim != 1 or neg.ndim != 1 or len(pos) < 2 or len(neg) < 2:
        raise ValueError(f"need two 1-D score lists of >= 2 items, got {pos.shape} and {neg.shape}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)

    def area(p: np.ndarray, n: np.ndarray) -> np.ndarray:  # p: (R, P), n: (R, N) -> (R,)
        d = p[:, :, None] - n[:, None, :]
        return (d > 0).mean((1, 2)) + 0.5 * (d == 0).mean((1, 2))

    thetas = np.concatenate([area(pos[rng.integers(0, len(pos), (m, len(pos)))],
                                  neg[rng.integers(0, len(neg), (m, len(neg)))])
                             for m in np.diff(np.r_[0:n_resamples:250, n_resamples])])
    alpha = (1 - confidence) / 2
    low, high = np.percentile(thetas, [100 * alpha, 100 * (1 - alpha)])
    return Interval(float(area(pos[None], neg[None])[0]), float(low), float(high), confidence)


def membership_scores(stats: TokenStats, text: str, reference_lp: torch.Tensor | None = None,
                      k: float = 0.2) -> dict[str, float]:
    """Every signal for one text, each oriented so that *higher means member* (the AUROC
    convention): ``loss`` and the two ratios are negated. ``reference`` only when
    ``reference_lp`` (the reference model's log-probs of the same tokens) is given."""
    pct = f"{round(100 * k)}%"
    out = {"loss": -loss(stats.logprob),
           f"Min-{pct}": min_k_prob(stats.logprob, k),
           "zlib ratio": -zlib_ratio(stats.logprob, text),
           f"Min-{pct}++": min_k_plus_plus(stats, k)}
    if reference_lp is not None:
        out["reference"] = -reference_calibrated(stats.logprob, reference_lp)
    return out


__all__ = ["BigramReference", "TokenStats", "auroc_interval", "distribution_stats", "fit_reference", "loss",
           "membership_scores", "min_k_plus_plus", "reference_calibrated", "reference_corpus", "text_ids",
           "text_token_stats",
           "zlib_ratio"]
