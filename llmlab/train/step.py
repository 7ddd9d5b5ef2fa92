"""One optimizer step over micro-batches: gradient accumulation, then global-norm clipping.

Accumulation divides each micro-batch's loss by their number before ``backward()``, so the
gradients that add up in ``.grad`` are those of the mean loss over the whole batch, for the memory
of one micro-batch. Clipping is global (Pascanu et al. 2013, arXiv:1211.5063). This is the step
chapter 02 asks the reader to write and then trains the live model with; :class:`Trainer`
does the same with its own data sampler and autocast. Taught in chapter 02 (solutions/02_gpt).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from llmlab.train.clip import clip_grad_norm

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def accumulated_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                     batches: Sequence[tuple[torch.Tensor, torch.Tensor]], loss_fn: LossFn,
                     max_norm: float = 1.0, clip: Callable[..., torch.Tensor] = clip_grad_norm
                     ) -> tuple[float, float]:
    """One step over micro-batches ``[(x, y), ...]`` (each ``(batch, seq)`` long).

    Starts from zero gradients, accumulates, clips with ``clip(parameters, max_norm)`` (which
    scales the gradients in place and returns the norm before clipping), steps and zeroes the
    gradients. Returns ``(mean loss, global grad norm before clipping)``.
    """
    if not batches:
        raise ValueError("accumulated_step needs at least one micro-batch, got none")
    optimizer.zero_grad(set_to_none=True)
    total = 0.0
    for x, y in batches:
        loss = loss_fn(model(x), y) / len(batches)
        loss.backward()
        total += loss.item()
    norm = clip(model.parameters(), max_norm).item()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return total, norm
