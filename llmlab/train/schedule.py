"""Learning-rate schedule: linear warmup, then cosine decay to a floor.

Cosine annealing: Loshchilov & Hutter, "SGDR", arXiv:1608.03983; warmup then cosine to 10% of
the peak is GPT-3's and Chinchilla's recipe (Brown et al., arXiv:2005.14165, appendix B;
Hoffmann et al., arXiv:2203.15556). Matches transformers'
``get_cosine_with_min_lr_schedule_with_warmup``. Taught in chapter 02 (solutions/02_gpt).
"""

from __future__ import annotations

import math


def cosine_lr(step: int, max_lr: float, warmup_steps: int, total_steps: int,
              min_lr: float = 0.0) -> float:
    """lr at optimizer step ``step`` (0-based).

    step < warmup:  max_lr · step / warmup
    warmup ≤ step ≤ total:  min_lr + (max_lr − min_lr) · ½(1 + cos(π · progress)),
        progress = (step − warmup) / (total − warmup)
    step > total:  min_lr
    """
    if total_steps <= 0 or warmup_steps < 0 or warmup_steps > total_steps:
        raise ValueError(f"need 0 <= warmup_steps ({warmup_steps}) <= total_steps ({total_steps})")
    if step < warmup_steps:
        return max_lr * step / warmup_steps
    if step >= total_steps:
        return min_lr
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return min_lr + (max_lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))
