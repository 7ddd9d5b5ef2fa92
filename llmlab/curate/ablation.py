"""Data ablations: train the same tiny model on two datasets at equal tokens and compare.

This is how data work is judged in the industry (FineWeb, DCLM, Dolma): every pipeline choice is
an ablation — train identical small models on the data with and without the change, for the same
number of tokens, and compare them on the same held-out evaluation. Here the model is a
byte-level GPT (chapter 02's ``GPT``, vocabulary 256, so no tokenizer choice interferes) small
enough to train in seconds on a CPU, and the evaluation is its loss on held-out text.

:func:`memorization` measures what duplicates do (Carlini et al., "Quantifying Memorization
Across Neural Language Models", arXiv:2202.07646; Kandpal et al., "Deduplicating Training Data
Mitigates Privacy Risks in Language Models", arXiv:2202.06539): prompt with the start of a
training passage and check whether greedy decoding reproduces its continuation exactly.
Taught in chapter 10 (solutions/10_data).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from llmlab.data import random_windows
from llmlab.model import GPT, GPTConfig
from llmlab.train import AdamW, evaluate_loss
from llmlab.utils import reject_unknown_keys

SEPARATOR = b"\n\x00\n"  # between documents in a byte stream


@reject_unknown_keys
@dataclass
class AblationConfig:
    """The tiny model and its training (equal for every dataset compared)."""

    d_model: int = 96
    n_layer: int = 2
    n_head: int = 4
    seq_len: int = 128
    batch_size: int = 16
    steps: int = 300
    lr: float = 3e-3
    seed: int = 0


def to_bytes(texts: Sequence[str]) -> np.ndarray:
    """Documents as one uint8 array of UTF-8 bytes, separated by ``SEPARATOR``."""
    return np.frombuffer(SEPARATOR.join(t.encode("utf-8") for t in texts), dtype=np.uint8).copy()


def train_bytes(data: np.ndarray, cfg: AblationConfig | None = None, progress=None) -> GPT:
    """A byte-level GPT trained for ``cfg.steps`` steps of ``batch_size x seq_len`` bytes drawn
    at random from ``data`` (so two datasets get exactly the same number of training tokens).
    ``progress``: an optional callable ``(step, loss)``, e.g. a tqdm update."""
    cfg = cfg or AblationConfig()
    if len(data) <= cfg.seq_len + 1:
        raise ValueError(f"need more than seq_len + 1 = {cfg.seq_len + 1} bytes, got {len(data)}")
    with torch.random.fork_rng():
        torch.manual_seed(cfg.seed)
        model = GPT(GPTConfig(vocab_size=256, block_size=cfg.seq_len, n_layer=cfg.n_layer,
                              n_head=cfg.n_head, d_model=cfg.d_model))
    opt = AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.0)
    gen = torch.Generator().manual_seed(cfg.seed)
    tokens = torch.from_numpy(data.astype(np.int64))
    model.train()
    for step in range(cfg.steps):
        lr = cfg.lr * min(1.0, (step + 1) / 20) * (0.1 + 0.9 * (1 - step / cfg.steps))
        for group in opt.param_groups:
            group["lr"] = lr
        x, y = random_windows(tokens, cfg.batch_size, cfg.seq_len, gen)
        loss = torch.nn.functional.cross_entropy(model(x).flatten(0, 1), y.flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if progress is not None:
            progress(step, float(loss))
    return model.eval()


def heldout_loss(model: GPT, data: np.ndarray, max_batches: int = 16) -> float:
    """Mean next-byte loss (nats) on consecutive windows of held-out ``data``."""
    seq = model.config.block_size
    return evaluate_loss(model, data, batch_size=8, seq_len=seq, max_batches=max_batches)


@torch.no_grad()
def memorization(model: GPT, passages: Sequence[bytes], prefix: int = 32,
                 suffix: int = 32) -> list[bool]:
    """For each passage: does greedy decoding from its first ``prefix`` bytes reproduce the next
    ``suffix`` bytes exactly? (All passages decoded together, one byte per step.)"""
    if any(len(p) < prefix + suffix for p in passages):
        raise ValueError(f"every passage needs at least prefix + suffix = {prefix + suffix} bytes")
    x = torch.tensor([list(p[:prefix]) for p in passages], dtype=torch.long)
    for _ in range(suffix):
        nxt = model(x[:, -model.config.block_size:])[:, -1].argmax(-1, keepdim=True)
        x = torch.cat([x, nxt], 1)
    want = torch.tensor([list(p[prefix:prefix + suffix]) for p in passages], dtype=torch.long)
    return (x[:, prefix:] == want).all(1).tolist()
