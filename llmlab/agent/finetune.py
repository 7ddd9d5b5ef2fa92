"""Fine-tune a model on tool-use traces with LoRA: chapter 05's adapters, chapter 06's SFT loss.

The base model is frozen and LoRA adapters (Hu et al., arXiv:2106.09685; :mod:`llmlab.peft`)
learn the trace format; the loss is chapter 06's assistant-only SFT loss
(:func:`llmlab.align.sft_loss`: mean next-token cross-entropy over the model-written lines).
The adapters are merged at the end, so the result is a plain model the engine serves.
Taught in chapter 12 (solutions/12_rag_agents).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn
from tqdm.auto import tqdm

from llmlab.align import sft_loss
from llmlab.peft import ALL_LINEAR, LoRAConfig, apply_lora, merge_and_unload
from llmlab.utils import reject_unknown_keys


@reject_unknown_keys
@dataclass(frozen=True)
class ToolTuneConfig:
    steps: int = 150
    batch_size: int = 16
    lr: float = 3e-3
    rank: int = 16
    alpha: float = 32.0
    seed: int = 0


def pad_examples(examples: Sequence[tuple[list[int], list[int]]], pad_id: int = 0
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded (B, T) ids and labels (-100 on padding)."""
    width = max(len(ids) for ids, _ in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), -100, dtype=torch.long)
    for i, (x, y) in enumerate(examples):
        ids[i, :len(x)], labels[i, :len(y)] = torch.tensor(x), torch.tensor(y)
    return ids, labels


def finetune_tool_use(model: nn.Module, examples: Sequence[tuple[list[int], list[int]]],
                      config: ToolTuneConfig | None = None, progress: bool = False
                      ) -> tuple[nn.Module, list[float]]:
    """A merged copy of ``model`` LoRA-tuned on ``examples`` (ids, labels); the loss per step."""
    c = config or ToolTuneConfig()
    if len(examples) < c.batch_size:
        raise ValueError(f"need at least batch_size={c.batch_size} examples, got {len(examples)}")
    tuned = apply_lora(copy.deepcopy(model), LoRAConfig(r=c.rank, alpha=c.alpha, target_modules=ALL_LINEAR))
    params = [p for p in tuned.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=c.lr, weight_decay=0.0)
    gen = torch.Generator().manual_seed(c.seed)
    device = next(tuned.parameters()).device
    tuned.train()
    losses, queue = [], []
    for _ in tqdm(range(c.steps), disable=not progress, desc="LoRA on traces", leave=False):
        if len(queue) < c.batch_size:
            queue = torch.randperm(len(examples), generator=gen).tolist()
        batch, queue = queue[:c.batch_size], queue[c.batch_size:]
        ids, labels = pad_examples([examples[i] for i in batch])
        loss = sft_loss(tuned(ids.to(device)), labels.to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return merge_and_unload(tuned).eval(), losses


__all__ = ["ToolTuneConfig", "finetune_tool_use", "pad_examples"]
