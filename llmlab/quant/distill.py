"""Knowledge distillation: train a small student on the teacher's next-token distributions.

"Distilling the Knowledge in a Neural Network" (Hinton et al., arXiv 1503.02531): the loss is
``α T² KL(softmax(z_t / T) || softmax(z_s / T)) + (1 - α) CE(z_s, y)``. The teacher's full
distribution carries far more bits per token than the one-hot label (which tokens are plausible,
and how much), so the student learns faster from the same tokens; MiniLLM (arXiv 2306.08543) and
the distilled Llama/Qwen/DeepSeek-R1 students scale the idea. :class:`DistillTrainer` is the
chapter-02 ``Trainer`` with this objective. Taught in chapter 07 (solutions/07_quant).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from llmlab.nn import fast_cross_entropy
from llmlab.train import Trainer


def distill_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, targets: torch.Tensor,
                 temperature: float = 2.0, alpha: float = 0.5) -> torch.Tensor:
    """logits: (batch, seq, vocab), targets: (batch, seq) -> scalar (nats)."""
    t = temperature
    kl = F.kl_div(F.log_softmax(student_logits.float() / t, -1),
                  F.log_softmax(teacher_logits.float() / t, -1), log_target=True,
                  reduction="none").sum(-1).mean()
    return alpha * t * t * kl + (1 - alpha) * fast_cross_entropy(student_logits, targets)


class DistillTrainer(Trainer):
    """``Trainer`` whose loss is :func:`distill_loss` against a frozen ``teacher``."""

    def __init__(self, model: nn.Module, teacher: nn.Module, *args, temperature: float = 2.0,
                 alpha: float = 0.5, **kwargs) -> None:
        super().__init__(model, *args, **kwargs)
        self.teacher = teacher.eval().requires_grad_(False)
        self.temperature, self.alpha = temperature, alpha

    def compute_loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            teacher_logits = self.teacher(x)
        return distill_loss(self.model(x), teacher_logits, y, self.temperature, self.alpha)
