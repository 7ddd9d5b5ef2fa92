"""Named pretraining recipes for ``llmlab pretrain --preset NAME``.

- ``book``: the model the whole book uses — Llama-style (RoPE, RMSNorm, SwiGLU) with grouped
  KV heads (4 query heads share 2 KV heads), 1.6 M parameters, 512-token context, BPE vocab of
  4096 trained on the stdlib corpus. Compute-optimal in Chinchilla's sense (Hoffmann et al.,
  arXiv:2203.15556): 20 training tokens per parameter (31.2 M), from the stdlib plus the pinned
  torch package's Python source (17.3 M tokens, so each token is seen 1.8 times). About 85
  minutes on 2 CPU cores in bf16; the size is what that budget buys at 20 tokens per parameter.
- ``tiny``: the same pipeline on a slice of the corpus in seconds (tests, smoke runs).
Taught in chapter 02 (solutions/02_gpt).
"""

from __future__ import annotations

from dataclasses import dataclass

from llmlab.model.config import GPTConfig
from llmlab.train.config import TrainConfig
from llmlab.utils import reject_unknown_keys


@reject_unknown_keys
@dataclass(frozen=True)
class Preset:
    """Everything a pretraining run needs besides the data on disk."""

    name: str
    model: GPTConfig
    train: TrainConfig
    max_train_files: int | None = None  # None: the whole corpus
    max_val_files: int | None = None
    # installed packages whose Python source joins the *training* split (tokenizer and
    # validation stay on the stdlib, so losses compare across presets)
    extra_train_packages: tuple[str, ...] = ()
    final_eval_batches: int = 32  # the card's val loss: this many batches of fixed windows
    threads: int = 1  # one thread degrades least when other jobs share the cores
    sample_prompts: tuple[str, ...] = ("def ", "class ", '"""')
    sample_tokens: int = 80
    # the corpus the shipped model was trained on: {"train": sha256, "val": sha256} as recorded
    # by ``corpus_manifest``; ``llmlab pretrain`` warns, saying how to get it, when the data differ
    corpus_sha256: dict[str, str] | None = None


BOOK = Preset(
    name="book",
    model=GPTConfig.llama_style(vocab_size=4096, block_size=512, d_model=128, n_layer=6,
                                n_head=4, n_kv_head=2, d_ff=320, tie_embeddings=True),
    train=TrainConfig(max_steps=3810, batch_size=16, lr=2e-3, warmup_steps=200,
                      min_lr_ratio=0.1, weight_decay=0.1, grad_clip=1.0, precision="auto",
                      eval_every=250, eval_batches=8, log_every=20, checkpoint_every=250, seed=0),
    extra_train_packages=("torch",),
    threads=2,
    corpus_sha256={"train": "05e42542b89c9a1f652c5bc4183d436731754d800f1bf670be5fd7c8c5bb3cb0",
                   "val": "35649110be369db45e280e03866a0b5898b587d6aea7b55b47f7cf4b84562505"},
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
