"""Fused softmax and softmax + cross-entropy in Triton.

:func:`softmax` normalises one row per program (max, exp, sum in registers; one read, one write).
:func:`cross_entropy` never writes the ``(rows, vocab)`` probabilities in the forward: each program
streams its row of logits in ``BLOCK``-wide chunks with the online-softmax update (running max
``m`` and sum ``l``; "Online normalizer calculation for softmax", arXiv 1805.02867) and stores
only ``lse = m + log l``. The backward recomputes ``softmax = exp(x - lse)`` chunk by chunk and
writes ``dx = (softmax - onehot(target)) * dloss`` — the fused cross-entropy of Liger-Kernel and
of Megatron's vocab-parallel loss. Taught in chapter 03 (solutions/03_attention).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _softmax_fwd(x_ptr, y_ptr, n, BLOCK: tl.constexpr):
    row = tl.program_id(0)
    cols = tl.arange(0, BLOCK)
    x = tl.load(x_ptr + row * n + cols, mask=cols < n, other=-float("inf")).to(tl.float32)
    e = tl.exp(x - tl.max(x, axis=0))
    tl.store(y_ptr + row * n + cols, (e / tl.sum(e, axis=0)).to(y_ptr.dtype.element_ty),
             mask=cols < n)


def softmax(x: torch.Tensor) -> torch.Tensor:
    """Row softmax over the last dim (forward only). x: (..., n) -> (..., n), fp32 statistics."""
    x2 = x.reshape(-1, x.shape[-1]).contiguous()
    y = torch.empty_like(x2)
    _softmax_fwd[(x2.shape[0],)](x2, y, x2.shape[1], BLOCK=triton.next_power_of_2(x2.shape[1]))
    return y.view(x.shape)


@triton.jit
def _ce_fwd(x_ptr, t_ptr, loss_ptr, lse_ptr, n, ignore_index, BLOCK: tl.constexpr):
    row = tl.program_id(0)
    m = -float("inf")
    l = 0.0
    for start in range(0, n, BLOCK):  # the online-softmax streaming pass over the vocabulary
        cols = start + tl.arange(0, BLOCK)
        x = tl.load(x_ptr + row * n + cols, mask=cols < n, other=-float("inf")).to(tl.float32)
        m_new = tl.maximum(m, tl.max(x, axis=0))
        l = l * tl.exp(m - m_new) + tl.sum(tl.exp(x - m_new), axis=0)
        m = m_new
    lse = m + tl.log(l)
    target = tl.load(t_ptr + row)
    valid = target != ignore_index
    picked = tl.load(x_ptr + row * n + tl.where(valid, target, 0)).to(tl.float32)
    tl.store(lse_ptr + row, lse)
    tl.store(loss_ptr + row, tl.where(valid, lse - picked, 0.0))


@triton.jit
def _ce_bwd(x_ptr, t_ptr, lse_ptr, dloss_ptr, dx_ptr, n, ignore_index, BLOCK: tl.constexpr):
    row = tl.program_id(0)
    target = tl.load(t_ptr + row)
    scale = tl.where(target != ignore_index, tl.load(dloss_ptr + row), 0.0)
    lse = tl.load(lse_ptr + row)
    for start in range(0, n, BLOCK):
        cols = start + tl.arange(0, BLOCK)
        x = tl.load(x_ptr + row * n + cols, mask=cols < n, other=0.0).to(tl.float32)
        p = tl.exp(x - lse)
        grad = (p - tl.where(cols == target, 1.0, 0.0)) * scale
        tl.store(dx_ptr + row * n + cols, grad.to(dx_ptr.dtype.element_ty), mask=cols < n)


class CrossEntropyFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits, targets, ignore_index, block):  # type: ignore[override]
        rows, n = logits.shape
        loss = torch.empty(rows, dtype=torch.float32, device=logits.device)
        lse = torch.empty(rows, dtype=torch.float32, device=logits.device)
        _ce_fwd[(rows,)](logits, targets, loss, lse, n, ignore_index, BLOCK=block)
        ctx.save_for_backward(logits, targets, lse)
        ctx.config = (ignore_index, block)
        return loss

    @staticmethod
    def backward(ctx, dloss):  # type: ignore[override]
        logits, targets, lse = ctx.saved_tensors
        ignore_index, block = ctx.config
        dx = torch.empty_like(logits)
        _ce_bwd[(logits.shape[0],)](logits, targets, lse, dloss.contiguous().float(), dx,
                                    logits.shape[1], ignore_index, BLOCK=block)
        return dx, None, None, None


def cross_entropy(logits: torch.Tensor, targets: torch.Tensor, ignore_index: int = -100,
                  reduction: str = "mean", block: int = 1024) -> torch.Tensor:
    """Fused softmax + cross-entropy with :func:`llmlab.nn.cross_entropy`'s contract.

    logits: (..., vocab); targets: (...) long -> scalar (``"mean"``/``"sum"``) or (...) fp32
    (``"none"``); positions whose target is ``ignore_index`` count for nothing. ``block`` is the
    vocabulary chunk one step of a program reads (a power of two).
    """
    if logits.shape[:-1] != targets.shape:
        raise ValueError(f"cross_entropy: logits (..., vocab) and targets (...) must agree on the "
                         f"leading dims; got logits {tuple(logits.shape)}, targets "
                         f"{tuple(targets.shape)}")
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"cross_entropy: reduction must be mean|sum|none, got {reduction!r}")
    flat = logits.reshape(-1, logits.shape[-1]).contiguous()
    t = targets.reshape(-1).contiguous()
    block = min(block, triton.next_power_of_2(flat.shape[1]))
    loss = CrossEntropyFunction.apply(flat, t, ignore_index, block)
    if reduction == "none":
        return loss.view(targets.shape)
    if reduction == "sum":
        return loss.sum()
    return loss.sum() / (t != ignore_index).sum().clamp(min=1)
