"""Differentiable collectives: the autograd-aware messages expert, sequence and context
parallelism are built from. Each one's backward is the transpose of its forward:

- ``all_to_all``: send row blocks to every rank; backward sends the gradients back the same way;
- ``ring_shift``: pass a tensor to the next rank on the ring; backward passes the gradient back;
- ``all_gather_dim`` / ``reduce_scatter_dim``: gather / sum-and-split along a dimension; each is
  the other's backward (Megatron sequence parallelism, arXiv:2205.05198, section 4.2.2).

Taught in chapter 04 (solutions/04_parallel).
"""

from __future__ import annotations

import torch
import torch.distributed as dist


class _AllToAll(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, out_splits, in_splits, group):
        ctx.splits, ctx.group = (out_splits, in_splits), group
        out = x.new_empty((sum(out_splits), *x.shape[1:]))
        dist.all_to_all_single(out, x.contiguous(), out_splits, in_splits, group=group)
        return out

    @staticmethod
    def backward(ctx, grad):
        out_splits, in_splits = ctx.splits
        back = grad.new_empty((sum(in_splits), *grad.shape[1:]))
        dist.all_to_all_single(back, grad.contiguous(), in_splits, out_splits, group=ctx.group)
        return back, None, None, None


def all_to_all(x: torch.Tensor, out_splits: list[int], in_splits: list[int],
               group=None) -> torch.Tensor:
    """Rows ``x[sum(in_splits[:j]) : …+in_splits[j]]`` go to rank j; rank j's block for us
    arrives in order. x: (sum(in_splits), ...) -> (sum(out_splits), ...)."""
    return _AllToAll.apply(x, list(out_splits), list(in_splits), group)


def _sendrecv(x: torch.Tensor, dst: int, src: int, group) -> torch.Tensor:
    out = torch.empty_like(x)
    g = (lambda r: dist.get_global_rank(group, r)) if group is not None else (lambda r: r)
    ops = [dist.P2POp(dist.isend, x.contiguous(), g(dst), group),
           dist.P2POp(dist.irecv, out, g(src), group)]
    for req in dist.batch_isend_irecv(ops):
        req.wait()
    return out


class _RingShift(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, group):
        ctx.group = group
        r, n = dist.get_rank(group), dist.get_world_size(group)
        return _sendrecv(x, (r + 1) % n, (r - 1) % n, group)

    @staticmethod
    def backward(ctx, grad):
        r, n = dist.get_rank(ctx.group), dist.get_world_size(ctx.group)
        return _sendrecv(grad, (r - 1) % n, (r + 1) % n, ctx.group), None


def ring_shift(x: torch.Tensor, group=None) -> torch.Tensor:
    """Send ``x`` to rank r+1, return what rank r−1 sent. x: (...) -> (...)."""
    return _RingShift.apply(x, group)


def _all_gather(x: torch.Tensor, dim: int, group) -> torch.Tensor:
    parts = [torch.empty_like(x) for _ in range(dist.get_world_size(group))]
    dist.all_gather(parts, x.contiguous(), group=group)
    return torch.cat(parts, dim)


class _AllGatherDim(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, dim, group):
        ctx.dim, ctx.group = dim, group
        return _all_gather(x, dim, group)

    @staticmethod
    def backward(ctx, grad):
        return _reduce_scatter(grad, ctx.dim, ctx.group), None, None


def _reduce_scatter(x: torch.Tensor, dim: int, group) -> torch.Tensor:
    n = dist.get_world_size(group)
    parts = [p.contiguous() for p in x.chunk(n, dim)]
    out = torch.empty_like(parts[0])
    dist.reduce_scatter(out, parts, group=group)
    return out


class _ReduceScatterDim(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, dim, group):
        ctx.dim, ctx.group = dim, group
        return _reduce_scatter(x, dim, group)

    @staticmethod
    def backward(ctx, grad):
        return _all_gather(grad, ctx.dim, ctx.group), None, None


def all_gather_dim(x: torch.Tensor, dim: int, group=None) -> torch.Tensor:
    """Concatenate every rank's ``x`` along ``dim`` (backward: reduce-scatter)."""
    return _AllGatherDim.apply(x, dim, group)


def reduce_scatter_dim(x: torch.Tensor, dim: int, group=None) -> torch.Tensor:
    """Sum ``x`` over ranks and keep this rank's chunk along ``dim`` (backward: all-gather)."""
    return _ReduceScatterDim.apply(x, dim, group)
