"""Memorisation against duplicate count: canaries repeated 0, 1, 4, 16… times in a training set.

Carlini et al. ("Quantifying Memorization Across Neural Language Models", arXiv:2202.07646) find
that the fraction of training sequences a model reproduces exactly, given their prefix, grows
log-linearly with how many times the sequence is duplicated in the training data; Lee et al.
("Deduplicating Training Data Makes Language Models Better", arXiv:2107.06499) and Kandpal et al.
("Deduplicating Training Data Mitigates Privacy Risks in Language Models", arXiv:2202.06539)
show that deduplication removes most of it. Here the duplicated sequences are *canaries*
(Carlini et al., "The Secret Sharer", arXiv:1802.08232): random word sequences that no amount of
generalisation predicts, so a low loss on one means it was memorised, not inferred.

- :func:`make_canaries` — canaries, each assigned a duplicate count (0: a never-seen control);
- :func:`inject` — a training byte stream with each canary inserted exactly that many times;
- :func:`canary_loss` / :func:`suffix_accuracy` / :func:`memorization` — per canary, the loss of
  its suffix given its prefix, the fraction of suffix bytes predicted top-1, and whether greedy
  decoding from the prefix reproduces the suffix exactly;
- :func:`memorization_vs_duplicates` — all of it, one row per duplicate count.
Taught in chapter 10 (solutions/10_data).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from llmlab.curate.ablation import SEPARATOR, AblationConfig, train_bytes
from llmlab.model import GPT
from llmlab.nn.functional import fast_cross_entropy


@dataclass(frozen=True)
class Canary:
    """A random passage and how many times it is put in the training set."""

    text: bytes
    count: int


def make_canaries(words: Sequence[str], counts: Sequence[int], per_count: int = 4,
                  length: int = 64, seed: int = 0) -> list[Canary]:
    """``per_count`` canaries for each duplicate count: random words from ``words`` joined by
    spaces, cut to exactly ``length`` bytes (ASCII words only), all distinct."""
    vocab = sorted({w for w in words if w.isascii() and w.isalpha()})
    if len(vocab) < 50:
        raise ValueError(f"need at least 50 distinct ASCII words to draw canaries from, got {len(vocab)}")
    if per_count < 1 or any(c < 0 for c in counts):
        raise ValueError(f"per_count must be >= 1 and counts >= 0, got {per_count}, {list(counts)}")
    rng = random.Random(seed)
    out: list[Canary] = []
    seen: set[bytes] = set()
    for count in counts:
        for _ in range(per_count):
            text = b""
            while len(text) < length or text in seen:
                text = " ".join(rng.choice(vocab) for _ in range(length)).encode()[:length]
            seen.add(text)
            out.append(Canary(text, int(count)))
    return out


def inject(docs: Sequence[bytes], canaries: Sequence[Canary], seed: int = 0) -> np.ndarray:
    """One uint8 training stream: ``docs`` and ``canary.count`` copies of each canary as their own
    documents, in random order, separated by ``SEPARATOR``."""
    items = [bytes(d) for d in docs] + [c.text for c in canaries for _ in range(c.count)]
    random.Random(seed).shuffle(items)
    return np.frombuffer(SEPARATOR.join(items), dtype=np.uint8).copy()


def count_occurrences(stream: np.ndarray, passage: bytes) -> int:
    """How many times ``passage`` occurs in ``stream`` (non-overlapping)."""
    return bytes(np.asarray(stream, dtype=np.uint8)).count(passage)


def _check(model: GPT, passages: Sequence[bytes], prefix: int, suffix: int) -> None:
    if prefix < 1 or suffix < 1:
        raise ValueError(f"prefix and suffix must be >= 1, got {prefix}, {suffix}")
    if any(len(p) < prefix + suffix for p in passages):
        raise ValueError(f"every passage needs at least prefix + suffix = {prefix + suffix} bytes")
    if prefix + suffix - 1 > model.config.block_size:
        raise ValueError(f"prefix + suffix - 1 = {prefix + suffix - 1} exceeds the model's "
                         f"block_size {model.config.block_size}")


@torch.no_grad()
def _suffix_logits(model: GPT, passages: Sequence[bytes], prefix: int,
                   suffix: int) -> tuple[torch.Tensor, torch.Tensor]:
    _check(model, passages, prefix, suffix)
    seq = torch.tensor([list(p[:prefix + suffix]) for p in passages], dtype=torch.long)
    return model(seq[:, :-1])[:, prefix - 1:], seq[:, prefix:]


def canary_loss(model: GPT, passages: Sequence[bytes], prefix: int = 32,
                suffix: int = 32) -> np.ndarray:
    """(n,) mean loss (nats per byte) of each passage's ``suffix`` bytes given its ``prefix``."""
    logits, target = _suffix_logits(model, passages, prefix, suffix)
    loss = fast_cross_entropy(logits, target, reduction="none").view(len(passages), suffix)
    return loss.mean(1).double().numpy()


def suffix_accuracy(model: GPT, passages: Sequence[bytes], prefix: int = 32,
                    suffix: int = 32) -> np.ndarray:
    """(n,) fraction of each passage's ``suffix`` bytes that are the model's most probable next
    byte given the true bytes before them (teacher forcing): a graded form of exact recall."""
    logits, target = _suffix_logits(model, passages, prefix, suffix)
    return (logits.argmax(-1) == target).double().mean(1).numpy()


@torch.no_grad()
def memorization(model: GPT, passages: Sequence[bytes], prefix: int = 32,
                 suffix: int = 32) -> list[bool]:
    """For each passage: does greedy decoding from its first ``prefix`` bytes reproduce the next
    ``suffix`` bytes exactly? (All passages decoded together, one byte per step.)"""
    _check(model, passages, prefix, suffix)
    x = torch.tensor([list(p[:prefix]) for p in passages], dtype=torch.long)
    for _ in range(suffix):
        nxt = model(x[:, -model.config.block_size:])[:, -1].argmax(-1, keepdim=True)
        x = torch.cat([x, nxt], 1)
    want = torch.tensor([list(p[prefix:prefix + suffix]) for p in passages], dtype=torch.long)
    return (x[:, prefix:] == want).all(1).tolist()


def memorization_vs_duplicates(docs: Sequence[bytes], canaries: Sequence[Canary],
                               cfg: AblationConfig | None = None, prefix: int = 32,
                               suffix: int = 32) -> list[dict[str, float]]:
    """Train on ``docs`` with the canaries injected; per duplicate count (ascending): how many
    copies the stream holds per canary, the mean canary suffix loss and byte accuracy, and the
    exact-continuation rate."""
    cfg = cfg or AblationConfig()
    stream = inject(docs, canaries, cfg.seed)
    model, _ = train_bytes(stream, cfg)
    texts = [c.text for c in canaries]
    losses = canary_loss(model, texts, prefix, suffix)
    exact = memorization(model, texts, prefix, suffix)
    accuracy = suffix_accuracy(model, texts, prefix, suffix)
    rows = []
    for count in sorted({c.count for c in canaries}):
        idx = [i for i, c in enumerate(canaries) if c.count == count]
        rows.append({"count": count,
                     "found": float(np.mean([count_occurrences(stream, texts[i]) for i in idx])),
                     "loss": float(losses[idx].mean()),
                     "accuracy": float(accuracy[idx].mean()),
                     "exact": float(np.mean([exact[i] for i in idx]))})
    return rows
