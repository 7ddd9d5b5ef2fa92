"""Fully sharded data parallel with a mixed-precision policy, shaped like PyTorch's FSDP2.

Zhao et al., "PyTorch FSDP: Experiences on Scaling Fully Sharded Data Parallel",
arXiv:2304.11277 — ZeRO stage 3 (Rajbhandari et al., "ZeRO: Memory Optimizations Toward Training
Trillion Parameter Models", arXiv:1910.02054, section 5.3): every rank keeps only a shard of each
parameter, its gradient and its optimizer state; a unit (a transformer block, then the root)
all-gathers its parameters just before its forward and reduce-scatters their gradients in
backward.

``fully_shard(module, mp_policy=MixedPrecisionPolicy(torch.bfloat16, torch.float32))`` works as
``torch.distributed.fsdp.fully_shard`` does, in place:

- each parameter the unit manages is cut along dim 0 into N chunks (``torch.chunk``: ⌈d₀/N⌉ rows,
  the last ranks get fewer or none) — norm weights and biases too, as FSDP2 does; the parameter
  *object* stays where it was, under its name, and now holds this rank's chunk in its original
  dtype: the fp32 master shard (what FSDP2's ``DTensor.to_local()`` returns). So
  ``named_parameters()`` lists the original names, and an optimizer built afterwards updates the
  fp32 master shards;
- before the unit's forward, one all-gather (of the shards cast to ``param_dtype``, as FSDP2
  casts before gathering) rebuilds every full parameter, which the module's code then reads under
  its usual attribute (``self.weight``); floating-point inputs are cast to ``param_dtype``
  (``cast_forward_inputs``) and outputs to ``output_dtype`` if set;
- in backward the full gradients (``param_dtype``) are cast to ``reduce_dtype`` (default
  ``param_dtype``), reduce-scattered in one message, divided by N, and cast to the master dtype,
  so ``p.grad`` is the fp32 gradient of the shard;
- wrap blocks first, then the root: a unit manages the parameters that no inner unit manages.

Difference from FSDP2: the gathered parameters stay referenced by the autograd graph until
backward (FSDP2's ``reshard_after_forward=False``); FSDP2 by default frees them after forward and
gathers again in backward (llmlab's :class:`~llmlab.parallel.zero.ShardedUnit` shows that, by
recomputation). Tested equal to ``fully_shard`` with ``MixedPrecisionPolicy`` on 2 gloo processes
and to one process doing the same casts (``tests/parallel/test_sharded.py``).
Taught in chapter 04 (solutions/04_parallel).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.utils._pytree import tree_map

from llmlab.utils import reject_unknown_keys


@reject_unknown_keys
@dataclasses.dataclass(frozen=True)
class MixedPrecisionPolicy:
    """What FSDP computes and communicates in (torch's ``MixedPrecisionPolicy`` fields).

    ``param_dtype``: the gathered parameters' dtype for forward and backward (None: the master
    dtype). ``reduce_dtype``: the gradients' dtype in the reduce-scatter (None: ``param_dtype``).
    ``output_dtype``: cast the unit's floating-point outputs to it (None: leave them).
    ``cast_forward_inputs``: cast floating-point inputs to ``param_dtype``.
    """

    param_dtype: torch.dtype | None = None
    reduce_dtype: torch.dtype | None = None
    output_dtype: torch.dtype | None = None
    cast_forward_inputs: bool = True

    def __post_init__(self) -> None:
        for field in ("param_dtype", "reduce_dtype", "output_dtype"):
            value = getattr(self, field)
            if value is not None and not (isinstance(value, torch.dtype)
                                          and value.is_floating_point):
                raise ValueError(f"{field} must be a floating-point torch.dtype or None, "
                                 f"got {value!r}")


@dataclasses.dataclass
class _Unit:
    """One ``fully_shard`` call: the parameters it manages and where each one sits."""

    params: list[nn.Parameter]
    slots: list[list[tuple[nn.Module, str]]]  # per parameter: (module, attribute) holding it
    shapes: list[torch.Size]  # full shapes
    rows: list[int]  # ⌈d₀/N⌉: rows of a padded shard
    policy: MixedPrecisionPolicy
    group: dist.ProcessGroup | None
    world_size: int
    rank: int


def _pad_rows(t: torch.Tensor, rows: int) -> torch.Tensor:
    """``t`` with zero rows appended up to ``rows`` along dim 0."""
    if t.shape[0] == rows:
        return t
    return torch.cat([t, t.new_zeros((rows - t.shape[0], *t.shape[1:]))])


def _gather(unit: _Unit, shards: tuple[torch.Tensor, ...], dtype: torch.dtype | None
            ) -> list[torch.Tensor]:
    """All-gather the unit's shards (cast to ``dtype``) in one message -> full tensors."""
    n = unit.world_size
    pieces = [_pad_rows(s.detach().to(dtype or s.dtype), r).reshape(-1)
              for s, r in zip(shards, unit.rows)]
    mine = torch.cat(pieces)
    everyone = mine.new_empty(n * mine.numel())
    dist.all_gather_single(everyone, mine, group=unit.group)
    everyone = everyone.view(n, mine.numel())
    out, offset = [], 0
    for piece, shape, rows in zip(pieces, unit.shapes, unit.rows):
        block = everyone[:, offset:offset + piece.numel()]  # (n, rows · inner)
        out.append(block.reshape(n * rows, *shape[1:])[:shape[0]].clone())
        offset += piece.numel()
    return out


class _GatherParams(torch.autograd.Function):
    """Forward: the unit's shards -> full parameters in ``param_dtype`` (one all-gather).
    Backward: full gradients -> ``reduce_dtype`` -> one reduce-scatter -> / N -> master dtype."""

    @staticmethod
    def forward(ctx, unit: _Unit, *shards: torch.Tensor) -> tuple[torch.Tensor, ...]:
        ctx.unit = unit
        ctx.master = [(s.dtype, s.shape[0]) for s in shards]
        return tuple(_gather(unit, shards, unit.policy.param_dtype))

    @staticmethod
    def backward(ctx, *grads: torch.Tensor | None):
        unit: _Unit = ctx.unit
        n, pol = unit.world_size, unit.policy
        dtype = pol.reduce_dtype or pol.param_dtype or ctx.master[0][0]
        blocks = []
        for g, shape, rows in zip(grads, unit.shapes, unit.rows):
            g = torch.zeros(shape, dtype=dtype) if g is None else g.to(dtype)
            blocks.append(_pad_rows(g, n * rows).reshape(n, -1))  # row r: rank r's chunk
        flat = torch.cat(blocks, dim=1).contiguous()  # (n, S)
        mine = flat.new_empty(flat.shape[1])
        dist.reduce_scatter_single(mine, flat.reshape(-1), group=unit.group)
        mine /= n
        out, offset = [], 0
        for (master, local_rows), shape, rows in zip(ctx.master, unit.shapes, unit.rows):
            size = rows * math.prod(shape[1:])
            out.append(mine[offset:offset + size].view(rows, *shape[1:])[:local_rows]
                       .to(master).clone())
            offset += size
        return (None, *out)


def _cast(tree: Any, dtype: torch.dtype | None) -> Any:
    if dtype is None:
        return tree
    return tree_map(lambda t: t.to(dtype) if isinstance(t, torch.Tensor)
                    and t.is_floating_point() else t, tree)


def _pre_forward(module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    unit: _Unit = module._llmlab_fsdp  # type: ignore[assignment]
    fulls = _GatherParams.apply(unit, *unit.params)
    for full, slots in zip(fulls, unit.slots):
        for mod, name in slots:
            mod.__dict__[name] = full  # read before ``_parameters`` by attribute lookup
    if unit.policy.cast_forward_inputs:
        args, kwargs = _cast((args, kwargs), unit.policy.param_dtype)
    return args, kwargs


def _post_forward(module: nn.Module, args: tuple, kwargs: dict, output: Any) -> Any:
    unit: _Unit = module._llmlab_fsdp  # type: ignore[assignment]
    for slots in unit.slots:
        for mod, name in slots:
            mod.__dict__.pop(name, None)  # the shard parameter is visible again
    return _cast(output, unit.policy.output_dtype)


def fully_shard(module: nn.Module, *, group: dist.ProcessGroup | None = None,
                mp_policy: MixedPrecisionPolicy | None = None) -> nn.Module:
    """Shard ``module``'s parameters (those no inner ``fully_shard`` manages) over ``group``, in
    place; returns ``module``. Build the optimizer afterwards, over ``module.parameters()``."""
    if not isinstance(module, nn.Module):
        raise ValueError(f"fully_shard expects an nn.Module, got {type(module).__name__}")
    if hasattr(module, "_llmlab_fsdp"):
        raise ValueError(f"{type(module).__name__} is already sharded")
    policy = mp_policy if mp_policy is not None else MixedPrecisionPolicy()
    if not isinstance(policy, MixedPrecisionPolicy):
        raise ValueError(f"mp_policy must be a MixedPrecisionPolicy, got {policy!r}")
    n, rank = dist.get_world_size(group), dist.get_rank(group)
    inner = {id(p) for m in module.modules() if m is not module and hasattr(m, "_llmlab_fsdp")
             for p in m.parameters()}
    params: list[nn.Parameter] = []
    slots: dict[int, list[tuple[nn.Module, str]]] = {}
    for mod in module.modules():
        for name, p in mod._parameters.items():
            if p is None or id(p) in inner:
                continue
            if p.dim() == 0:
                raise ValueError(f"fully_shard shards along dim 0; {type(mod).__name__}.{name} "
                                 "is a scalar")
            if id(p) not in slots:
                slots[id(p)] = []
                params.append(p)
            slots[id(p)].append((mod, name))
    if not params:
        raise ValueError(f"{type(module).__name__} has no parameter left to shard")
    shapes = [p.shape for p in params]
    rows = [-(-s[0] // n) for s in shapes]
    with torch.no_grad():
        for p, r in zip(params, rows):  # the same Parameter object now holds this rank's chunk
            p.data = p.data[rank * r:(rank + 1) * r].clone()
    module._llmlab_fsdp = _Unit(params, [slots[id(p)] for p in params], shapes, rows, policy,
                                group, n, rank)
    module.register_forward_pre_hook(_pre_forward, with_kwargs=True)
    module.register_forward_hook(_post_forward, with_kwargs=True)
    return module


def full_parameters(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every parameter of ``model`` by its name, whole, in its master dtype (a collective: every
    rank calls it). Parameters outside any sharded unit are returned as they are."""
    full: dict[int, torch.Tensor] = {}
    for m in model.modules():
        unit = getattr(m, "_llmlab_fsdp", None)
        if unit is not None:
            with torch.no_grad():
                for p, t in zip(unit.params, _gather(unit, tuple(unit.params), None)):
                    full[id(p)] = t
    return {k: full.get(id(p), p.detach()) for k, p in model.named_parameters()}


__all__ = ["MixedPrecisionPolicy", "full_parameters", "fully_shard"]
