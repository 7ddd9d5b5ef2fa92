"""``TrainConfig``: the knobs of a pretraining run. Unknown keys raise ``ValueError``.

Defaults follow small-GPT practice (nanoGPT; GPT-3 appendix B): AdamW β=(0.9, 0.95),
weight decay 0.1 on matrices, gradient clipping at 1.0, warmup then cosine to 10% of the peak.
Taught in chapter 02 (solutions/02_gpt).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from llmlab.train.precision import PRECISIONS
from llmlab.utils import reject_unknown_keys


@reject_unknown_keys
@dataclass
class TrainConfig:
    """One pretraining run. A step is one optimizer update of
    ``batch_size × grad_accum`` windows of ``seq_len`` tokens."""

    max_steps: int = 200
    batch_size: int = 16
    seq_len: int | None = None  # None: the model's block_size
    grad_accum: int = 1
    lr: float = 3e-3
    min_lr_ratio: float = 0.1
    warmup_steps: int = 20
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8
    grad_clip: float = 1.0
    precision: str = "auto"  # "auto": bf16 where it is fast here, else fp32 (llmlab.train.precision)
    eval_every: int = 100
    eval_batches: int = 8
    log_every: int = 10
    checkpoint_every: int = 0  # 0: only when asked
    checkpoint_path: str | None = None
    seed: int = 0
    threads: int | None = None  # torch threads during fit(); small models run best on 1

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"TrainConfig.precision={self.precision!r}; expected {PRECISIONS}")
        for key in ("max_steps", "batch_size", "grad_accum", "log_every", "eval_batches"):
            if getattr(self, key) < 1:
                raise ValueError(f"TrainConfig.{key} must be >= 1, got {getattr(self, key)}")
        if not 0 <= self.warmup_steps <= self.max_steps:
            raise ValueError(f"warmup_steps ({self.warmup_steps}) must be in [0, max_steps]")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> TrainConfig:
        return TrainConfig(**{**self.to_dict(), **changes})
