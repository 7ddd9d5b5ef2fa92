"""What "good" means for a language model's loss: the unigram baseline.

A unigram model predicts every token from its corpus frequency alone, ignoring context. Its
cross-entropy on the validation set (add-one smoothed counts from the training set) is the
loss any model that uses context must beat by a wide margin. A uniform guess costs ln(vocab).
Taught in chapter 02 (solutions/02_gpt).
"""

from __future__ import annotations

import math

import numpy as np


def unigram_loss(train_tokens: np.ndarray, eval_tokens: np.ndarray, vocab_size: int) -> float:
    """Mean -ln p(token) on ``eval_tokens`` under add-one-smoothed train frequencies (nats)."""
    counts = np.bincount(np.asarray(train_tokens, dtype=np.int64), minlength=vocab_size) + 1.0
    logp = np.log(counts / counts.sum())
    return float(-logp[np.asarray(eval_tokens, dtype=np.int64)].mean())


def uniform_loss(vocab_size: int) -> float:
    """ln(vocab): the loss of guessing uniformly."""
    return math.log(vocab_size)
