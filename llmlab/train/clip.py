"""Global gradient-norm clipping: scale all gradients together when their joint L2 norm is large.

Pascanu, Mikolov & Bengio, "On the difficulty of training recurrent neural networks",
arXiv:1211.5063, section 3.2. The norm is over *all* parameters at once (one vector), so the
update's direction is kept and only its length shrinks. Matches
``torch.nn.utils.clip_grad_norm_``. Taught in chapter 02 (solutions/02_gpt).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch


def clip_grad_norm(parameters: Iterable[torch.Tensor], max_norm: float) -> torch.Tensor:
    """Scale grads in place so their global L2 norm is at most ``max_norm``; return the norm
    before clipping (a scalar tensor, logged by the trainer)."""
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return torch.tensor(0.0)
    total = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g.float())
                                                  for g in grads]))
    scale = torch.clamp(max_norm / (total + 1e-6), max=1.0)
    for g in grads:
        g.mul_(scale.to(g.dtype))
    return total
