"""Named pretraining recipes for ``llmlab pretrain --preset NAME``.

- ``book``: the model the whole book uses — Llama-style (RoPE, RMSNorm, SwiGLU) with grouped
  KV heads (6 query heads share 2 KV heads), 3.1 M parameters, 256-token context, BPE vocab of
  4096 trained on the stdlib corpus. Sized for ~15 minutes on 2 shared CPU cores.
- ``tiny``: the same pipeline on a slice of the corpus in seconds (tests, smoke runs).
Taught in chapter 02 (solutions/02_gpt).
"""

from __future__ import annotations

from dataclasses import dataclass

from llmlab.model.config import GPTConfig
from llmlab.train.config import TrainConfig


@dataclass(frozen=True)
class Preset:
    """Everything a pretraining run needs besides the data on disk."""

    name: str
    model: GPTConfig
    train: TrainConfig
    max_train_files: int | None = None  # None: the whole corpus
    max_val_files: int | None = None
    final_eval_batches: int = 32  # the card's val loss: this many batches of fixed windows
    threads: int = 1  # one thread degrades least when other jobs share the cores
    sample_prompts: tuple[str, ...] = ("def ", "class ", '"""')
    sample_tokens: int = 80


BOOK = Preset(
    name="book",
    model=GPTConfig.llama_style(vocab_size=4096, block_size=256, d_model=192, n_layer=6,
                                n_head=6, n_kv_head=2, d_ff=512, tie_embeddings=True),
    train=TrainConfig(max_steps=600, batch_size=8, lr=2e-3, warmup_steps=40, min_lr_ratio=0.1,
                      weight_decay=0.1, grad_clip=1.0, precision="auto", eval_every=100,
                      eval_batches=8, log_every=10, checkpoint_every=100, seed=0),
)

TINY = Preset(
    name="tiny",
    model=GPTConfig.llama_style(vocab_size=384, block_size=64, d_model=32, n_layer=2,
                                n_head=4, n_kv_head=2, d_ff=64),
    train=TrainConfig(max_steps=12, batch_size=4, lr=3e-3, warmup_steps=2, eval_every=6,
                      eval_batches=2, log_every=3, checkpoint_every=6, seed=0),
    max_train_files=6,
    max_val_files=2,
    final_eval_batches=2,
    sample_tokens=12,
)

PRESETS = {p.name: p for p in (BOOK, TINY)}


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose from {sorted(PRESETS)}")
    return PRESETS[name]
