"""Dense retrieval: a bi-encoder trained contrastively with in-batch negatives (InfoNCE).

A bi-encoder maps a query and a document *separately* to unit vectors, so every document is
encoded once, offline, and a search is one inner product per document (or an approximate index:
:mod:`llmlab.rag.ivf`, :mod:`llmlab.rag.hnsw`). Training pulls each query toward its own document
and away from the other documents of the batch — the in-batch negatives of DPR (Karpukhin et
al., "Dense Passage Retrieval for Open-Domain Question Answering", arXiv:2004.04906) — with the
InfoNCE loss (van den Oord et al., "Representation Learning with Contrastive Predictive Coding",
arXiv:1807.03748):

.. math:: \\mathcal{L} = -\\frac{1}{B} \\sum_i \\log
    \\frac{\\exp(q_i \\cdot d_i / \\tau)}{\\sum_j \\exp(q_i \\cdot d_j / \\tau)}

which is the cross-entropy of the (B, B) similarity matrix against its diagonal. The encoder here
is the book's model body (chapter 02), mean-pooled over the real tokens and projected — the
recipe of SGPT (Muennighoff, arXiv:2202.08904) and of today's LLM-based embedders (E5-Mistral,
arXiv:2401.00368), on a 1.6 M-parameter model. Query and document share the encoder.
Taught in chapter 12 (solutions/12_rag_agents).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from llmlab.align import hidden_states
from llmlab.utils import reject_unknown_keys


def info_nce(q: torch.Tensor, d: torch.Tensor, temperature: float = 0.05) -> torch.Tensor:
    """InfoNCE with in-batch negatives. q, d: (B, dim) unit vectors; row i of ``d`` is the
    positive of row i of ``q``, every other row a negative -> scalar (mean over the batch)."""
    if q.dim() != 2 or q.shape != d.shape:
        raise ValueError(f"q and d must be (B, dim) of the same shape, got {tuple(q.shape)} and "
                         f"{tuple(d.shape)}")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    logits = q @ d.T / temperature  # (B, B): query i against every document of the batch
    return F.cross_entropy(logits, torch.arange(len(q), device=q.device))


@reject_unknown_keys
@dataclass(frozen=True)
class BiEncoderConfig:
    """Encoder and training settings."""

    dim: int = 128            # output vector size
    max_len: int = 96         # tokens kept per text (the head of long code)
    temperature: float = 0.05
    steps: int = 120
    batch_size: int = 32
    lr: float = 1e-3
    seed: int = 0

    def __post_init__(self) -> None:
        if min(self.dim, self.max_len, self.steps, self.batch_size) < 1 or self.lr <= 0:
            raise ValueError(f"every size, steps and lr must be positive, got {self}")
        if self.batch_size < 2:
            raise ValueError("in-batch negatives need batch_size >= 2")


class BiEncoder(nn.Module):
    """A copy of the first ``n_layers`` blocks of a GPT body (its token embeddings and final
    norm included), mean-pooled over real tokens, a linear head, L2-normalised.

    forward(ids: (B, T) long, valid: (B, T) bool) -> (B, dim) unit vectors. Rows are
    right-padded: with causal attention the padding never changes a real token's state.
    ``n_layers=0`` is a bag of the model's token embeddings (fast; word order ignored).
    """

    def __init__(self, lm: nn.Module, dim: int = 128, n_layers: int | None = None) -> None:
        super().__init__()
        self.body = copy.deepcopy(lm)
        n = len(lm.blocks) if n_layers is None else n_layers
        if not 0 <= n <= len(lm.blocks):
            raise ValueError(f"n_layers must be in 0..{len(lm.blocks)}, got {n_layers}")
        self.body.blocks = self.body.blocks[:n]
        self.head = nn.Linear(lm.config.d_model, dim)

    def forward(self, ids: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        h = hidden_states(self.body, ids)  # (B, T, d_model)
        w = valid.unsqueeze(-1).to(h.dtype)
        pooled = (h * w).sum(1) / w.sum(1).clamp(min=1.0)  # (B, d_model)
        return F.normalize(self.head(pooled), dim=-1)


def pad_rows(rows: Sequence[Sequence[int]], pad_id: int = 0, device: torch.device | str = "cpu"
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded (B, T) ids and (B, T) bool validity of token lists (an empty one gets a
    single padding token, marked valid so its mean is defined)."""
    rows = [list(r) or [pad_id] for r in rows]
    width = max(map(len, rows))
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    valid = torch.zeros((len(rows), width), dtype=torch.bool)
    for i, r in enumerate(rows):
        ids[i, :len(r)] = torch.tensor(r)
        valid[i, :len(r)] = True
    return ids.to(device), valid.to(device)


def batch_ids(tokenizer, texts: Sequence[str], max_len: int, pad_id: int = 0,
              device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded (B, T) ids and (B, T) bool validity of ``texts``, each cut to ``max_len``."""
    return pad_rows([tokenizer.encode(t)[:max_len] for t in texts], pad_id, device)


@torch.no_grad()
def encode(encoder: BiEncoder, tokenizer, texts: Sequence[str], max_len: int = 96,
           batch_size: int = 64, progress: bool = False) -> np.ndarray:
    """(len(texts), dim) float32 unit vectors (encoder in eval mode, batches sorted by length)."""
    was = encoder.training
    encoder.eval()
    device = next(encoder.parameters()).device
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    out = np.zeros((len(texts), encoder.head.out_features), dtype=np.float32)
    for a in tqdm(range(0, len(order), batch_size), disable=not progress, desc="encode", leave=False):
        idx = order[a:a + batch_size]
        ids, valid = batch_ids(tokenizer, [texts[i] for i in idx], max_len, device=device)
        out[idx] = encoder(ids, valid).float().cpu().numpy()
    encoder.train(was)
    return out


def train_biencoder(encoder: BiEncoder, tokenizer, pairs: Sequence[tuple[str, str]],
                    config: BiEncoderConfig | None = None,
                    loss_fn: Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor] = info_nce,
                    progress: bool = False) -> list[float]:
    """Train on (query, document) pairs with in-batch negatives; returns the loss per step.

    Batches are drawn without replacement (reshuffled each epoch, seeded), so a batch never holds
    one pair twice (a duplicate would be its own false negative). ``loss_fn(q, d, temperature)``
    is :func:`info_nce` unless a learner's is passed.
    """
    c = config or BiEncoderConfig()
    if len(pairs) < c.batch_size:
        raise ValueError(f"need at least batch_size={c.batch_size} pairs, got {len(pairs)}")
    device = next(encoder.parameters()).device
    tokens = {t: tokenizer.encode(t)[:c.max_len] for pair in pairs for t in pair}  # once each
    gen = torch.Generator().manual_seed(c.seed)
    opt = torch.optim.AdamW(encoder.parameters(), lr=c.lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 10) * (1 - s / c.steps))
    encoder.train()
    losses, queue = [], []
    for _ in tqdm(range(c.steps), disable=not progress, desc="train bi-encoder", leave=False):
        if len(queue) < c.batch_size:
            queue = torch.randperm(len(pairs), generator=gen).tolist()
        batch, queue = queue[:c.batch_size], queue[c.batch_size:]
        q_ids, q_valid = pad_rows([tokens[pairs[i][0]] for i in batch], device=device)
        d_ids, d_valid = pad_rows([tokens[pairs[i][1]] for i in batch], device=device)
        loss = loss_fn(encoder(q_ids, q_valid), encoder(d_ids, d_valid), c.temperature)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(encoder.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
    encoder.eval()
    return losses


@dataclass(frozen=True)
class Embedder:
    """``Embedder(encoder, tokenizer)(text)`` -> (dim,) unit vector: a :class:`RetrievalKit`'s
    ``embed`` as a picklable object (one text through :func:`encode`)."""

    encoder: BiEncoder
    tokenizer: object
    max_len: int = 64

    def __call__(self, text: str) -> np.ndarray:
        return encode(self.encoder, self.tokenizer, [text], max_len=self.max_len)[0]


__all__ = ["BiEncoder", "BiEncoderConfig", "Embedder", "batch_ids", "encode", "info_nce", "pad_rows",
           "train_biencoder"]
