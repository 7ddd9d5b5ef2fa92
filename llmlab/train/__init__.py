"""Pretraining: AdamW, the warmup+cosine schedule, clipping, mixed precision where it pays, the Trainer,
checkpoints, MFU, baselines, presets and the ``llmlab pretrain`` pipeline.

Taught in chapter 02 (solutions/02_gpt).
"""

from llmlab.train.baselines import uniform_loss, unigram_loss
from llmlab.train.checkpoint import load_checkpoint, save_checkpoint
from llmlab.train.clip import clip_grad_norm
from llmlab.train.config import TrainConfig
from llmlab.train.mfu import measure_matmul_peak, mfu
from llmlab.train.optim import AdamW, adamw_step, adamw_step_foreach, decay_groups
from llmlab.train.precision import autocast, bf16_is_fast, bf16_speedup, resolve_precision
from llmlab.train.schedule import cosine_lr
from llmlab.train.step import accumulated_step
from llmlab.train.trainer import Trainer, evaluate_loss

__all__ = [
    "AdamW",
    "TrainConfig",
    "Trainer",
    "accumulated_step",
    "adamw_step",
    "adamw_step_foreach",
    "autocast",
    "bf16_is_fast",
    "bf16_speedup",
    "clip_grad_norm",
    "cosine_lr",
    "decay_groups",
    "evaluate_loss",
    "load_checkpoint",
    "measure_matmul_peak",
    "mfu",
    "resolve_precision",
    "save_checkpoint",
    "uniform_loss",
    "unigram_loss",
]
