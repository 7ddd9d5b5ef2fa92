"""ZeRO stages 1 and 2 as a ``torch.optim.Optimizer`` that wraps any optimizer class.

Rajbhandari et al., "ZeRO: Memory Optimizations Toward Training Trillion Parameter Models",
arXiv:1910.02054, section 5.2: with N data-parallel ranks, each rank keeps the optimizer state
(Adam's m and v) of only 1/N of the parameters, updates only those, and then sends the updated
parameters to the other ranks. Stage 1 (P_os) shards the optimizer state; stage 2 (P_os+g) shards
the gradients too: each gradient is reduced onto the one rank that owns its parameter, and the
other ranks drop it.

:class:`ShardedOptimizer` has the shape of PyTorch's
``torch.distributed.optim.ZeroRedundancyOptimizer``: ``ShardedOptimizer(params, torch.optim.AdamW,
lr=..., weight_decay=...)`` partitions the parameters *by parameter* (each whole tensor to one
rank, largest first onto the least-loaded rank, as torch does), builds the inner optimizer over
this rank's share only, keeps ``param_groups`` with every parameter (so an LR scheduler from
``torch.optim.lr_scheduler`` and per-group learning rates and weight decays work unchanged) and,
after the local update, broadcasts each rank's updated parameters from that rank. Model parameters
stay where they are, with their names (the teaching version, :class:`~llmlab.parallel.zero.
ZeroOptimizer`, moves them into one flat buffer).

Gradients: with ``reduce_gradients=True`` (the default) ``step()`` averages them over the ranks
first — stage 1 by an all-reduce (every rank keeps the full averaged gradient), stage 2 by one
reduce per owner, after which a rank holds gradients for its own parameters only. With
``reduce_gradients=False`` the gradients are taken as already averaged (the model is wrapped in
DDP), as torch's ``ZeroRedundancyOptimizer`` takes them. (DeepSpeed's stage 2 reduces bucket by
bucket during backward; here the reduction runs at ``step()``.)

``state_dict()`` follows torch: ``consolidate_state_dict(to=0)`` (every rank calls it) gathers the
shards onto rank ``to``, whose ``state_dict()`` is then that of the unsharded inner optimizer —
loadable by a plain ``torch.optim.AdamW`` over the same parameters. ``load_state_dict`` takes such
a full state dict on every rank and keeps this rank's share.
Taught in chapter 04 (solutions/04_parallel).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable
from typing import Any

import torch
import torch.distributed as dist
from torch import nn


def partition_by_size(sizes: list[int], n: int, load: list[int] | None = None) -> list[int]:
    """Owner rank of each item: largest first, each onto the rank with the least so far (torch's
    ``ZeroRedundancyOptimizer`` partitioning, called once per parameter group with the ``load``
    carried over). Ties go to the lowest rank. ``load`` (per rank) is updated in place."""
    if n < 1:
        raise ValueError(f"need at least one rank, got {n}")
    load = [0] * n if load is None else load
    if len(load) != n:
        raise ValueError(f"load has {len(load)} entries, expected one per rank ({n})")
    owner = [0] * len(sizes)
    for i in sorted(range(len(sizes)), key=lambda i: -sizes[i]):
        r = min(range(n), key=lambda r: (load[r], r))
        owner[i] = r
        load[r] += sizes[i]
    return owner


class ShardedOptimizer(torch.optim.Optimizer):
    """ZeRO-1/2 around ``optimizer_class(**defaults)``: each rank keeps the state of its share.

    Args:
        params: parameters or parameter groups (dicts with ``"params"`` and per-group options).
        optimizer_class: a ``torch.optim.Optimizer`` subclass (``torch.optim.AdamW``, ``SGD`` ...).
        process_group: the data-parallel group (default: the whole world).
        stage: 1 (shard the optimizer state) or 2 (the gradients too).
        reduce_gradients: average gradients over the ranks in ``step()`` (False: DDP did).
        **defaults: the inner optimizer's options (``lr``, ``weight_decay``, ``betas`` ...).
    """

    def __init__(self, params: Iterable[nn.Parameter] | Iterable[dict[str, Any]],
                 optimizer_class: type[torch.optim.Optimizer],
                 process_group: dist.ProcessGroup | None = None, stage: int = 1,
                 reduce_gradients: bool = True, **defaults: Any) -> None:
        if not (isinstance(optimizer_class, type)
                and issubclass(optimizer_class, torch.optim.Optimizer)):
            raise ValueError("optimizer_class must be a torch.optim.Optimizer subclass such as "
                             f"torch.optim.AdamW, got {optimizer_class!r}")
        if stage not in (1, 2):
            raise ValueError(f"ShardedOptimizer does ZeRO stages 1 and 2, got stage={stage} "
                             "(stage 3 shards the parameters: llmlab.parallel.fully_shard)")
        if not reduce_gradients and stage == 2:
            raise ValueError("stage 2 shards the gradients by reducing them onto their owners: "
                             "it needs reduce_gradients=True")
        super().__init__(params, defaults)
        self.group, self.stage, self.reduce_gradients = process_group, stage, reduce_gradients
        self.rank, self.world_size = dist.get_rank(process_group), dist.get_world_size(process_group)
        self.optimizer_class = optimizer_class
        everything = [p for g in self.param_groups for p in g["params"]]
        if len({id(p) for p in everything}) != len(everything):
            raise ValueError("a parameter appears twice in params")
        self.owner: dict[int, int] = {}
        self._load = [0] * self.world_size  # elements owned per rank, carried group to group
        for g in self.param_groups:
            self._deal(g)
        local_groups = [{**{k: v for k, v in g.items() if k != "params"},
                         "params": [p for p in g["params"] if self.owner[id(p)] == self.rank]}
                        for g in self.param_groups]
        if not any(g["params"] for g in local_groups):
            raise ValueError(f"rank {self.rank} owns no parameter: {len(everything)} parameters "
                             f"cannot be sharded over {self.world_size} ranks")
        self.optim = optimizer_class(local_groups, **defaults)
        for mine, inner in zip(self.param_groups, self.optim.param_groups):
            for k, v in inner.items():  # the inner optimizer's defaults (betas, eps ...)
                if k != "params":
                    mine.setdefault(k, v)
        self.state = self.optim.state  # only this rank's parameters have state
        self._consolidated: dict[str, Any] | None = None

    def _deal(self, group: dict[str, Any]) -> None:
        owners = partition_by_size([p.numel() for p in group["params"]], self.world_size,
                                   self._load)
        self.owner.update({id(p): r for p, r in zip(group["params"], owners)})

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a parameter group, as every torch optimizer can: its parameters are dealt out to
        the ranks from the current loads and this rank's share joins the inner optimizer."""
        super().add_param_group(param_group)
        if not hasattr(self, "optim"):  # called by torch.optim.Optimizer.__init__: dealt there
            return
        g = self.param_groups[-1]
        self._deal(g)
        self.optim.add_param_group({**{k: v for k, v in g.items() if k != "params"},
                                    "params": [p for p in g["params"]
                                               if self.owner[id(p)] == self.rank]})
        for k, v in self.optim.param_groups[-1].items():
            if k != "params":
                g.setdefault(k, v)

    # -- the step ---------------------------------------------------------------------------
    def _owned_by(self, r: int) -> list[nn.Parameter]:
        return [p for g in self.param_groups for p in g["params"] if self.owner[id(p)] == r]

    def _average_gradients(self) -> None:
        n = self.world_size
        if self.stage == 1:
            params = [p for g in self.param_groups for p in g["params"]]
            _flat_collective(params, lambda buf: dist.all_reduce(buf, group=self.group), n)
            return
        for r in range(n):  # stage 2: each owner receives the sum of its parameters' gradients
            root = dist.get_global_rank(self.group, r) if self.group is not None else r
            _flat_collective(self._owned_by(r),
                             lambda buf, dst=root: dist.reduce(buf, dst=dst, group=self.group), n)
            if r != self.rank:
                for p in self._owned_by(r):
                    p.grad = None  # a rank keeps the gradients of its own parameters only

    def _broadcast_parameters(self) -> None:
        for r in range(self.world_size):
            root = dist.get_global_rank(self.group, r) if self.group is not None else r
            by_dtype: dict[torch.dtype, list[nn.Parameter]] = {}
            for p in self._owned_by(r):
                by_dtype.setdefault(p.dtype, []).append(p)
            for params in by_dtype.values():  # one message per owner and dtype
                with torch.no_grad():
                    flat = torch.cat([p.detach().reshape(-1) for p in params])
                    dist.broadcast(flat, src=root, group=self.group)
                    if r != self.rank:
                        offset = 0
                        for p in params:
                            p.copy_(flat[offset:offset + p.numel()].view_as(p))
                            offset += p.numel()

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        """Average the gradients (if asked), update this rank's parameters with the inner
        optimizer, and broadcast every rank's updated parameters from their owner."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        if self.reduce_gradients:
            self._average_gradients()
        for mine, inner in zip(self.param_groups, self.optim.param_groups):
            for k, v in mine.items():  # the scheduler and the user change ``self.param_groups``
                if k != "params":
                    inner[k] = v
        self.optim.step()
        self._broadcast_parameters()
        return loss

    # -- checkpoints ------------------------------------------------------------------------
    def _index(self) -> dict[int, int]:
        """id(param) -> its index in an unsharded optimizer's state dict."""
        return {id(p): i for i, p in enumerate(p for g in self.param_groups for p in g["params"])}

    def _groups_state(self) -> list[dict[str, Any]]:
        index = self._index()
        return [{**{k: v for k, v in g.items() if k != "params"},
                 "params": [index[id(p)] for p in g["params"]]} for g in self.param_groups]

    def consolidate_state_dict(self, to: int = 0) -> None:
        """Gather every rank's optimizer state onto rank ``to`` (a collective: every rank
        calls it). Rank ``to``'s ``state_dict()`` then returns the whole state."""
        if not 0 <= to < self.world_size:
            raise ValueError(f"to must be a rank in [0, {self.world_size}), got {to}")
        index = self._index()
        mine = {index[id(p)]: {k: (v.detach().clone() if isinstance(v, torch.Tensor) else v)
                               for k, v in st.items()} for p, st in self.optim.state.items()}
        root = dist.get_global_rank(self.group, to) if self.group is not None else to
        gathered: list[Any] | None = [None] * self.world_size if self.rank == to else None
        dist.gather_object(mine, gathered, dst=root, group=self.group)
        if self.rank == to:
            state: dict[int, Any] = {}
            for part in gathered or []:
                state.update(part)
            self._consolidated = {"state": dict(sorted(state.items())),
                                  "param_groups": self._groups_state()}
        else:
            self._consolidated = None

    def state_dict(self) -> dict[str, Any]:
        """The unsharded optimizer's state dict, on the rank that ``consolidate_state_dict``
        gathered onto; a ``RuntimeError`` anywhere else (as torch's)."""
        if self._consolidated is None:
            raise RuntimeError("call consolidate_state_dict(to=r) on every rank first; the "
                               "state dict then lives on rank r")
        out = copy.copy(self._consolidated)
        out["param_groups"] = self._groups_state()  # the hyperparameters as they are now
        return out

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a full (consolidated or unsharded) optimizer state dict, given on every rank:
        this rank keeps the state of its own parameters."""
        if set(state_dict) != {"state", "param_groups"}:
            raise ValueError("expected an optimizer state dict with 'state' and 'param_groups', "
                             f"got keys {sorted(state_dict)}")
        groups = state_dict["param_groups"]
        if [len(g["params"]) for g in groups] != [len(g["params"]) for g in self.param_groups]:
            raise ValueError("the state dict's parameter groups have sizes "
                             f"{[len(g['params']) for g in groups]}, this optimizer's "
                             f"{[len(g['params']) for g in self.param_groups]}")
        local_state, local_groups, i = {}, [], 0
        for mine, saved in zip(self.param_groups, groups):
            for k, v in saved.items():
                if k != "params":
                    mine[k] = v
            ids = []
            for p, j in zip(mine["params"], saved["params"]):
                if self.owner[id(p)] == self.rank:
                    if j in state_dict["state"]:
                        local_state[i] = state_dict["state"][j]
                    ids.append(i)
                    i += 1
            local_groups.append({**{k: v for k, v in saved.items() if k != "params"},
                                 "params": ids})
        self.optim.load_state_dict({"state": local_state, "param_groups": local_groups})
        self.state = self.optim.state
        self._consolidated = None


def _flat_collective(params: list[nn.Parameter], op: Callable[[torch.Tensor], object],
                     n: int) -> None:
    """Run ``op`` on one flat buffer per dtype of ``params``' gradients (zeros where a rank has
    none), divide by ``n`` and write the result back as the gradients."""
    by_dtype: dict[torch.dtype, list[nn.Parameter]] = {}
    for p in params:
        by_dtype.setdefault(p.dtype, []).append(p)
    for same in by_dtype.values():
        flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1)
                          for p in same])
        op(flat)
        flat /= n
        offset = 0
        for p in same:
            p.grad = flat[offset:offset + p.numel()].view_as(p).clone()
            offset += p.numel()


__all__ = ["ShardedOptimizer", "partition_by_size"]
