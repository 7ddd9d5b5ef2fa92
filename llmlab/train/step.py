"""One optimizer step over micro-batches: gradient accumulation, then global-norm clipping.

Accumulation divides each micro-batch's loss by their number before ``backward()``, so the
gradients that add up in ``.grad`` are those of the mean loss over the whole batch, for the memory
of one micro-batch. Clipping is global (Pascanu et al. 2013, arXiv:1211.5063). This is the step
chapter 02 asks the reader to write and then trains the live model with; :class:`Trainer`
runs it too, with its own objective and autocast. Taught in chapter 02 (solutions/02_gpt).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence

import torch

from llmlab.train.clip import clip_grad_norm

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def sum_dtype(device: torch.device) -> torch.dtype:
    """fp64 for running sums of losses kept on the device (fp32 on Apple's MPS, which has none)."""
    return torch.float32 if device.type == "mps" else torch.float64


def accumulated_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                     batches: Sequence[tuple[torch.Tensor, torch.Tensor]], loss_fn: LossFn | None,
                     max_norm: float = 1.0, clip: Callable[..., torch.Tensor] = clip_grad_norm, *,
                     loss_of: LossFn | None = None,
                     autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
                     ) -> tuple[float, float]:
    """One step over micro-batches ``[(x, y), ...]`` (each ``(batch, seq)`` long).

    Starts from zero gradients, accumulates, clips with ``clip(parameters, max_norm)`` (which
    scales the gradients in place and returns the norm before clipping), steps and zeroes the
    gradients. A micro-batch's loss is ``loss_fn(model(x), y)``, or ``loss_of(x, y)`` when given
    (an objective that needs more than the logits, e.g. distillation); it is computed inside
    ``autocast()``. Returns ``(mean loss, global grad norm before clipping)``, read from the
    device once.
    """
    if not batches:
        raise ValueError("accumulated_step needs at least one micro-batch, got none")
    if (loss_fn is None) == (loss_of is None):
        raise ValueError("give exactly one of loss_fn (of the logits) and loss_of (of x, y)")
    loss_of = loss_of or (lambda x, y: loss_fn(model(x), y))
    optimizer.zero_grad(set_to_none=True)
    device = batches[0][0].device
    total = torch.zeros((), dtype=sum_dtype(device), device=device)  # no sync per micro-batch
    for x, y in batches:
        with autocast():
            loss = loss_of(x, y) / len(batches)
        loss.backward()
        total += loss.detach().to(total.dtype)
    norm = clip(model.parameters(), max_norm)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return total.item(), norm.item()
