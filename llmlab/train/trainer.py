"""The pretraining loop: sample windows, forward under autocast, backward with gradient
accumulation, clip, AdamW step, schedule — with a log, validation and exact resume.

- Mixed precision: where bf16 is fast (``precision="auto"`` measures it, see
  :mod:`llmlab.train.precision`) matmuls run in bf16 under autocast while weights, gradients and
  Adam moments stay fp32 (Micikevicius et al., "Mixed Precision Training", arXiv:1710.03740;
  bf16 needs no loss scaling, having fp32's exponent range); elsewhere everything is fp32.
- Gradient accumulation: ``grad_accum`` micro-batches, each loss divided by ``grad_accum``,
  sum to the gradient of the mean over the big batch (tested equal to one big batch).
- Device-agnostic: the Trainer follows the model's device. Windows are sampled with a CPU
  generator (the same stream on any device, resumable) and moved to the model's device;
  autocast uses the device's type.
Taught in chapter 02 (solutions/02_gpt).
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from llmlab.data.batches import random_windows, sequential_windows
from llmlab.model.counting import flops_per_token
from llmlab.nn.functional import fast_cross_entropy
from llmlab.train.checkpoint import load_checkpoint, save_checkpoint
from llmlab.train.config import TrainConfig
from llmlab.train.mfu import measure_matmul_peak, mfu
from llmlab.train.optim import AdamW, decay_groups
from llmlab.train.precision import DTYPES, autocast, resolve_precision
from llmlab.train.schedule import cosine_lr
from llmlab.train.step import accumulated_step, sum_dtype


def model_device(model: torch.nn.Module) -> torch.device:
    """The device of the model's parameters (CPU for a model without any)."""
    return next((p.device for p in model.parameters()), torch.device("cpu"))


@torch.no_grad()
def evaluate_loss(model: torch.nn.Module, tokens: np.ndarray, batch_size: int, seq_len: int,
                  max_batches: int | None = None, precision: str = "fp32") -> float:
    """Mean next-token loss (nats) over consecutive non-overlapping windows of ``tokens``."""
    was_training = model.training
    model.eval()
    device = model_device(model)
    total, count = torch.zeros((), dtype=sum_dtype(device), device=device), 0  # no sync per batch
    for x, y in sequential_windows(tokens, batch_size, seq_len, max_batches):
        x, y = x.to(device), y.to(device)
        with autocast(precision, device):
            logits = model(x)
        total += fast_cross_entropy(logits, y, reduction="sum").to(total.dtype)
        count += y.numel()
    model.train(was_training)
    return total.item() / count


class Trainer:
    """Trains a ``GPT`` on a token array. ``fit()`` runs to ``config.max_steps``; ``log`` holds
    one dict per logged step (loss, grad_norm, lr, tokens_per_s, mfu) and per evaluation
    (val_loss, val_ppl)."""

    def __init__(self, model: torch.nn.Module, train_tokens: np.ndarray,
                 val_tokens: np.ndarray | None = None, config: TrainConfig | None = None,
                 peak_flops: float | None = None) -> None:
        self.model, self.config = model, config or TrainConfig()
        c = self.config
        self.device = model_device(model)
        self.precision = resolve_precision(c.precision, self.device)  # "bf16" or "fp32"
        self.seq_len = c.seq_len or model.config.block_size
        if self.seq_len > model.config.block_size:
            raise ValueError(f"seq_len {self.seq_len} > block_size {model.config.block_size}")
        self.train_tokens, self.val_tokens = train_tokens, val_tokens
        self.optimizer = AdamW(decay_groups(model, c.weight_decay), lr=c.lr,
                               betas=(c.beta1, c.beta2), eps=c.eps)
        self.generator = torch.Generator().manual_seed(c.seed)  # the data sampler's stream (CPU)
        self.step = 0
        self.log: list[dict] = []
        self.flops_per_token = flops_per_token(model.config, self.seq_len)
        self._peak = peak_flops

    @property
    def peak_flops(self) -> float:
        """Measured matmul peak in the precision actually trained in (measured once, on first use)."""
        if self._peak is None:
            self._peak = measure_matmul_peak(DTYPES[self.precision], device=self.device)
        return self._peak

    def lr_at(self, step: int) -> float:
        c = self.config
        return cosine_lr(step, c.lr, c.warmup_steps, c.max_steps, c.lr * c.min_lr_ratio)

    def compute_loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The training objective of one micro-batch (next-token cross-entropy; subclasses such as
        chapter 07's distillation trainer change it)."""
        return fast_cross_entropy(self.model(x), y)

    def train_step(self) -> dict:
        """One optimizer step over ``grad_accum`` micro-batches (chapter 02's
        :func:`accumulated_step`). Returns loss, grad_norm, lr."""
        c, model = self.config, self.model
        model.train()
        lr = self.lr_at(self.step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        batches = []
        for _ in range(c.grad_accum):
            x, y = random_windows(self.train_tokens, c.batch_size, self.seq_len, self.generator)
            batches.append((x.to(self.device, non_blocking=True),
                            y.to(self.device, non_blocking=True)))
        loss, grad_norm = accumulated_step(
            model, self.optimizer, batches, None, c.grad_clip, loss_of=self.compute_loss,
            autocast=lambda: autocast(self.precision, self.device))
        self.step += 1
        return {"step": self.step, "loss": loss, "grad_norm": grad_norm, "lr": lr}

    def evaluate(self) -> dict:
        if self.val_tokens is None:
            raise ValueError("Trainer has no val_tokens to evaluate on")
        c = self.config
        loss = evaluate_loss(self.model, self.val_tokens, c.batch_size, self.seq_len,
                             c.eval_batches, self.precision)
        return {"step": self.step, "val_loss": loss, "val_ppl": math.exp(loss)}

    def fit(self, progress: bool = True, until: int | None = None) -> list[dict]:
        """Train to ``max_steps`` (continuing from ``self.step`` after a resume).

        ``until``: stop once this many steps are done in all, as a job with a time limit does
        (the schedule still runs to ``max_steps``); the run then saves a checkpoint to
        ``config.checkpoint_path`` when one is set, and ``resume`` continues it exactly."""
        c = self.config
        stop = c.max_steps if until is None else until
        if not 0 <= stop <= c.max_steps:
            raise ValueError(f"until must be in [0, max_steps={c.max_steps}], got {until}")
        threads = torch.get_num_threads()
        if c.threads:
            torch.set_num_threads(c.threads)
        try:
            self._fit(progress, stop)
        finally:
            torch.set_num_threads(threads)
        if until is not None and c.checkpoint_path:
            self.save(c.checkpoint_path)
        return self.log

    def _fit(self, progress: bool, stop: int) -> None:
        c = self.config
        bar = tqdm(total=stop, initial=min(self.step, stop), desc="pretraining", disable=not progress)
        tokens_per_step = c.batch_size * c.grad_accum * self.seq_len
        t_last, steps_last = time.perf_counter(), 0
        while self.step < stop:
            row = self.train_step()
            steps_last += 1
            if self.step % c.log_every == 0 or self.step == c.max_steps:
                dt = time.perf_counter() - t_last
                tps = steps_last * tokens_per_step / dt
                row |= {"tokens": self.step * tokens_per_step, "tokens_per_s": tps,
                        "mfu": mfu(tps, self.flops_per_token, self.peak_flops)}
                self.log.append(row)
                bar.set_postfix(loss=f"{row['loss']:.3f}", tok_s=f"{tps:,.0f}")
                t_last, steps_last = time.perf_counter(), 0
            if self.val_tokens is not None and c.eval_every and (
                    self.step % c.eval_every == 0 or self.step == c.max_steps):
                self.log.append(self.evaluate())
                t_last = time.perf_counter()  # evaluation time is not training throughput
            if c.checkpoint_every and c.checkpoint_path and self.step % c.checkpoint_every == 0:
                self.save(c.checkpoint_path)
                t_last = time.perf_counter()
            bar.update(1)
        bar.close()

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "generator": self.generator.get_state(), "torch_rng": torch.get_rng_state(),
                "step": self.step, "log": list(self.log), "config": self.config.to_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        self.step, self.log = state["step"], list(state["log"])

    def save(self, path: str | Path) -> Path:
        """Atomic checkpoint of everything ``resume`` needs."""
        return save_checkpoint(self.state_dict(), path)

    def resume(self, path: str | Path) -> None:
        self.load_state_dict(load_checkpoint(path))
