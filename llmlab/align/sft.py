"""Supervised fine-tuning (SFT): chat-formatted examples, loss on assistant tokens only, and
sequence packing without cross-document attention.

- SFT is the first stage of Ouyang et al. 2022, "Training language models to follow
  instructions with human feedback" (InstructGPT), arXiv:2203.02155.
- Packing several examples into one row, with a block-diagonal causal mask and positions that
  restart at every document so no example attends to another: Krell et al. 2021, "Efficient
  Sequence Packing without Cross-contamination", arXiv:2107.02027.

The mask and the restarting positions reach llmlab's attention in the step context the model's
forward takes (:class:`llmlab.nn.StepContext`, no cache). Taught in chapter 06
(solutions/06_align).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from llmlab.nn.context import StepContext
from llmlab.tokenizer import CHATML_SPECIAL_TOKENS, Tokenizer, apply_chat_template

IGNORE_INDEX = -100


def add_chat_tokens(model: nn.Module, tok: Tokenizer) -> tuple[nn.Module, Tokenizer]:
    """Give a base model and tokenizer the ChatML special tokens (``<|im_start|>``, ``<|im_end|>``).

    The new ids are appended after the vocabulary; their embedding rows start at the mean
    embedding (a common choice: the new token starts as an "average" token). Returns the model
    (modified in place) and a new tokenizer.
    """
    new = [t for t in CHATML_SPECIAL_TOKENS if t not in tok.special_ids]
    if not new:
        return model, tok
    vocab = dict(tok.vocab)
    for t in new:
        vocab[len(vocab)] = t.encode()
    tok2 = Tokenizer(vocab, tok.merges, tok.special_tokens + new, tok.pattern)
    w = model.tok_emb.weight.data  # (vocab, d_model)
    grown = torch.cat([w, w.mean(0, keepdim=True).expand(len(new), -1)], dim=0)
    model.tok_emb.weight = nn.Parameter(grown.clone())
    model.tok_emb.num_embeddings = len(vocab)
    if model.config.tie_embeddings:
        model.lm_head.weight = model.tok_emb.weight
    else:
        h = model.lm_head.weight.data
        model.lm_head.weight = nn.Parameter(torch.cat([h, h.mean(0, keepdim=True).expand(len(new), -1)]))
        model.lm_head.out_features = len(vocab)
    model.config = dataclasses.replace(model.config, vocab_size=len(vocab))
    return model, tok2


def sft_example(tok: Tokenizer, messages: list[dict[str, str]]) -> tuple[list[int], list[int]]:
    """Token ids and next-token labels of one ChatML conversation, the same length:
    ``labels[t] = ids[t+1]`` where token t+1 is an assistant token (reply or ``<|im_end|>``),
    else -100; the last position has no next token (-100)."""
    enc = apply_chat_template(tok, messages)
    ids, mask = enc.ids, enc.assistant_mask
    labels = [ids[t + 1] if mask[t + 1] else IGNORE_INDEX for t in range(len(ids) - 1)] + [IGNORE_INDEX]
    return ids, labels


@dataclass
class PackedBatch:
    """Rows of packed documents. All (rows, seq_len): ``ids``; ``labels`` (-100 = no loss);
    ``positions`` (restart at 0 in each document); ``doc_ids`` (-1 = padding)."""

    ids: torch.Tensor
    labels: torch.Tensor
    positions: torch.Tensor
    doc_ids: torch.Tensor


def pack_examples(examples: list[tuple[list[int], list[int]]], seq_len: int, pad_id: int) -> PackedBatch:
    """Pack (ids, labels) examples into rows of ``seq_len`` tokens, first fit in order.

    An example never straddles two rows; one longer than ``seq_len`` raises ValueError.
    """
    rows: list[list[tuple[int, list[int], list[int]]]] = []
    fill: list[int] = []
    for d, (ids, labels) in enumerate(examples):
        if len(ids) != len(labels):
            raise ValueError(f"example {d}: {len(ids)} ids but {len(labels)} labels")
        if len(ids) > seq_len:
            raise ValueError(f"example {d} has {len(ids)} tokens > seq_len {seq_len}")
        for r, used in enumerate(fill):
            if used + len(ids) <= seq_len:
                rows[r].append((d, ids, labels))
                fill[r] += len(ids)
                break
        else:
            rows.append([(d, ids, labels)])
            fill.append(len(ids))
    shape = (len(rows), seq_len)
    out = PackedBatch(torch.full(shape, pad_id), torch.full(shape, IGNORE_INDEX),
                      torch.zeros(shape, dtype=torch.long), torch.full(shape, -1))
    for r, docs in enumerate(rows):
        at = 0
        for d, ids, labels in docs:
            n = len(ids)
            out.ids[r, at:at + n] = torch.tensor(ids)
            out.labels[r, at:at + n] = torch.tensor(labels)
            out.positions[r, at:at + n] = torch.arange(n)
            out.doc_ids[r, at:at + n] = d
            at += n
    return out


def document_causal_mask(doc_ids: torch.Tensor) -> torch.Tensor:
    """Block-diagonal causal mask: query i may see key j iff j <= i and both are in one document.

    doc_ids: (batch, T) long (-1 = padding) -> (batch, 1, T, T) bool, True = may attend.
    Padding queries see themselves only, so no softmax row is empty.
    """
    T = doc_ids.shape[1]
    causal = torch.ones(T, T, dtype=torch.bool, device=doc_ids.device).tril()
    same = doc_ids[:, :, None] == doc_ids[:, None, :]  # (batch, T, T)
    return (same & causal)[:, None]


def packed_context(batch: PackedBatch) -> StepContext:
    """The model's step context for a packed batch: its positions (restarting in every
    document), the document mask, no cache. Pass as ``model(batch.ids, packed_context(batch))``."""
    return StepContext(batch.positions, document_causal_mask(batch.doc_ids))


def sft_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy over positions whose label is not -100.

    logits: (batch, T, vocab), labels: (batch, T) -> scalar. The mean is over trained tokens of
    the whole batch (as ``trl``'s SFTTrainer), not a mean of per-example means.
    """
    if logits.shape[:-1] != labels.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and labels {tuple(labels.shape)} disagree")
    return F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(), ignore_index=IGNORE_INDEX)


def packed_sft_loss(model: nn.Module, batch: PackedBatch) -> torch.Tensor:
    """SFT loss of a packed batch through an llmlab GPT (document mask + position resets)."""
    logits = model(batch.ids, packed_context(batch))
    return sft_loss(logits, batch.labels)
