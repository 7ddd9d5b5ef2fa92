"""ZeRO: shard the optimizer state (stage 1), the gradients too (stage 2), the parameters too
(stage 3, what PyTorch calls FSDP).

Rajbhandari et al., "ZeRO: Memory Optimizations Toward Training Trillion Parameter Models",
arXiv:1910.02054, section 5. With Ψ parameters on N data-parallel ranks, mixed-precision Adam
holds 2Ψ (fp16 params) + 2Ψ (fp16 grads) + KΨ (fp32 master, m, v: K = 12) bytes per rank. ZeRO
divides the last terms by N:

    stage 0 (DDP):  (2 + 2 + K) Ψ          stage 2:  2Ψ + (2 + K) Ψ / N
    stage 1:        (2 + 2) Ψ + K Ψ / N    stage 3:  (2 + 2 + K) Ψ / N

llmlab trains in fp32 on a CPU: 4 + 4 bytes of params and grads, K = 8 (m, v; the fp32 params
are their own master copy). :func:`zero_memory` evaluates either.

Communication per step (section 7): stages 1 and 2 reduce-scatter the gradients and all-gather
the updated parameters — the same 2Ψ·(N−1)/N as DDP's all-reduce; stage 3 all-gathers each
layer's parameters in forward and again in backward, 3Ψ·(N−1)/N, 1.5× DDP.

Implementation: all parameters live in one flat fp32 buffer (padded to a multiple of N); rank r
owns the slice ``[r·s, (r+1)·s)``. Stage 3 wraps each transformer block in a
:class:`ShardedUnit` that all-gathers its slice in forward, frees it afterwards, gathers it
again when backward recomputes the block, and reduce-scatters the gradient.
Taught in chapter 04 (solutions/04_parallel).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.checkpoint import checkpoint

from llmlab.parallel.collectives import ring_all_gather, ring_reduce_scatter
from llmlab.train.optim import AdamW


def zero_memory(psi: float, n: int, stage: int, param_bytes: float = 2, grad_bytes: float = 2,
                k: float = 12) -> float:
    """Model-state bytes per rank for ZeRO ``stage`` (0 = plain DP), paper section 5.1."""
    if stage not in (0, 1, 2, 3):
        raise ValueError(f"ZeRO stage must be 0, 1, 2 or 3, got {stage}")
    p, g, o = param_bytes * psi, grad_bytes * psi, k * psi
    return {0: p + g + o, 1: p + g + o / n, 2: p + (g + o) / n, 3: (p + g + o) / n}[stage]


def _flat_layout(params: list[nn.Parameter], n: int) -> tuple[int, int]:
    total = sum(p.numel() for p in params)
    shard = -(-total // n)
    return total, shard


class ZeroOptimizer:
    """ZeRO stage 1 or 2 around llmlab's AdamW: ``backward()`` as usual, then ``step()``.

    The model's parameters become views into one flat buffer; this rank's slice of it is the
    parameter the inner AdamW updates, so m and v exist only for that slice. ``step()``
    reduce-scatters the gradients (each rank receives the sum over ranks of its slice, then
    averages), updates its slice and all-gathers the updated slices: DDP's bytes. Stage 1 keeps
    the full gradient buffer backward wrote (Ψ gradients per rank); stage 2 frees it, keeping
    only the slice. (DeepSpeed's stage 2 reduces bucket by bucket during backward so the full
    buffer never exists at once; here it exists until ``step``.)

    ``comm`` (a :class:`~llmlab.parallel.comm.DistComm`) runs the collectives as llmlab's ring
    algorithms over send/recv, so ``bytes_sent`` is measured message by message; without it
    ``torch.distributed``'s collectives run and ``bytes_sent`` follows the ring formulas.
    """

    def __init__(self, params, stage: int = 1, group: dist.ProcessGroup | None = None,
                 comm=None, **adamw) -> None:
        if stage not in (1, 2):
            raise ValueError(f"ZeroOptimizer does stages 1 and 2 (stage 3: ShardedUnit), "
                             f"got {stage}")
        self.params = [p for p in dict.fromkeys(params) if p.requires_grad]
        self.stage, self.group, self.comm = stage, group, comm
        self.rank, self.n = dist.get_rank(group), dist.get_world_size(group)
        total, s = _flat_layout(self.params, self.n)
        self.flat = torch.zeros(s * self.n, dtype=self.params[0].dtype)
        offset = 0
        for p in self.params:  # parameters become views of the flat buffer
            self.flat[offset:offset + p.numel()].copy_(p.detach().reshape(-1))
            p.data = self.flat[offset:offset + p.numel()].view_as(p)
            offset += p.numel()
        self.shard = nn.Parameter(self.flat[self.rank * s:(self.rank + 1) * s])  # shares memory
        self.optimizer = AdamW([self.shard], **adamw)
        self.bytes_sent = 0

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None
        self.shard.grad = None

    def step(self) -> None:
        s = self.shard.numel()
        flat_grad = torch.zeros_like(self.flat)
        offset = 0
        for p in self.params:
            if p.grad is not None:
                flat_grad[offset:offset + p.numel()] = p.grad.reshape(-1)
            offset += p.numel()
        if self.comm is not None:
            mine = ring_reduce_scatter(flat_grad, self.comm)
        else:
            mine = torch.empty(s, dtype=flat_grad.dtype)
            dist.reduce_scatter_single(mine, flat_grad, group=self.group)
        offset = 0
        for p in self.params:  # stage 1 keeps the full (local) gradient buffer; stage 2 frees it
            p.grad = flat_grad[offset:offset + p.numel()].view_as(p) if self.stage == 1 else None
            offset += p.numel()
        if self.stage == 1:  # the reduced slice goes back into its place in the full buffer
            self.shard.grad = flat_grad[self.rank * s:(self.rank + 1) * s].copy_(mine / self.n)
        else:
            self.shard.grad = mine / self.n  # a compact copy: mine may view a full buffer
        self.optimizer.step()
        if self.comm is not None:
            self.flat.copy_(ring_all_gather(self.shard.detach(), self.comm))
            self.bytes_sent = self.comm.bytes_sent
        else:
            dist.all_gather_single(self.flat, self.shard.detach().clone(), group=self.group)
            self.bytes_sent += 2 * (self.n - 1) * s * self.flat.element_size()


class GatherParams(torch.autograd.Function):
    """Forward: all-gather every rank's slice -> the full flat buffer. Backward: reduce-scatter
    the full gradient -> this rank's slice, averaged over ranks."""

    @staticmethod
    def forward(ctx, shard: torch.Tensor, group) -> torch.Tensor:
        ctx.group = group
        n = dist.get_world_size(group)
        full = shard.new_empty(shard.numel() * n)
        dist.all_gather_single(full, shard.contiguous(), group=group)
        return full

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        n = dist.get_world_size(ctx.group)
        mine = grad.new_empty(grad.numel() // n)
        dist.reduce_scatter_single(mine, grad.contiguous(), group=ctx.group)
        return mine / n, None


class ShardedUnit(nn.Module):
    """ZeRO-3 / FSDP unit: holds only this rank's slice of ``module``'s own parameters.

    forward gathers the full parameters, runs ``module``, and lets them go; with
    ``recompute=True`` (every block) backward runs the forward again under
    ``torch.utils.checkpoint``, gathering the parameters a second time, so no full parameter
    outlives its layer. Tied parameters are stored once. Parameters inside child units are not
    this unit's (wrap children first).
    """

    def __init__(self, module: nn.Module, group: dist.ProcessGroup | None = None,
                 recompute: bool = True) -> None:
        super().__init__()
        self.module, self.group, self.recompute = module, group, recompute
        n, rank = dist.get_world_size(group), dist.get_rank(group)
        inner = {id(p) for m in module.modules() if isinstance(m, ShardedUnit) and m is not self
                 for p in m.parameters()}
        self._slots: dict[int, list[tuple[nn.Module, str]]] = {}  # param id -> where it sits
        self._params: list[nn.Parameter] = []
        for mod in module.modules():
            if any(mod is u.module for u in module.modules() if isinstance(u, ShardedUnit)):
                continue
            for name, p in list(mod._parameters.items()):
                if p is None or id(p) in inner:
                    continue
                if id(p) not in self._slots:
                    self._slots[id(p)] = []
                    self._params.append(p)
                self._slots[id(p)].append((mod, name))
        total, s = _flat_layout(self._params, n)
        flat = torch.zeros(s * n, dtype=self._params[0].dtype)
        torch.cat([p.detach().reshape(-1) for p in self._params], out=flat[:total])
        self.shapes = [p.shape for p in self._params]
        self.shard = nn.Parameter(flat[rank * s:(rank + 1) * s].clone())
        for p in self._params:
            for mod, name in self._slots[id(p)]:
                del mod._parameters[name]
                setattr(mod, name, None)

    def _install(self, full: torch.Tensor | None) -> None:
        offset = 0
        for p, shape in zip(self._params, self.shapes):
            n = shape.numel()
            view = None if full is None else full[offset:offset + n].view(shape)
            for mod, name in self._slots[id(p)]:
                setattr(mod, name, view)
            offset += n

    def _run(self, shard: torch.Tensor, *args):
        self._install(GatherParams.apply(shard, self.group))
        try:
            return self.module(*args)
        finally:
            self._install(None)  # the full parameters live only inside the autograd graph

    def forward(self, *args):
        if self.recompute and torch.is_grad_enabled():
            return checkpoint(self._run, self.shard, *args, use_reentrant=False)
        return self._run(self.shard, *args)

    def full_parameters(self) -> dict[str, torch.Tensor]:
        """Gather and return the full parameters by their first name (for checks)."""
        with torch.no_grad():
            full = GatherParams.apply(self.shard, self.group)
        out, offset = {}, 0
        for p, shape in zip(self._params, self.shapes):
            mod, name = self._slots[id(p)][0]
            qual = next(k for k, m in self.module.named_modules() if m is mod)
            out[f"{qual}.{name}".lstrip(".")] = full[offset:offset + shape.numel()].view(shape)
            offset += shape.numel()
        return out


def zero3(model: nn.Module, group: dist.ProcessGroup | None = None) -> ShardedUnit:
    """ZeRO-3 a GPT: each block a recomputed :class:`ShardedUnit`, then the rest (embeddings,
    final norm, head) one root unit that stays gathered from forward to backward (as FSDP keeps
    its root). Train with ``llmlab.train.AdamW(root.parameters())``: only slices are there."""
    for i, block in enumerate(model.blocks):
        model.blocks[i] = ShardedUnit(block, group)
    return ShardedUnit(model, group, recompute=False)
