"""A 2-D device mesh: ranks laid out as a (dp, tp) grid, one process group per row and column.

Rank = i_dp · tp + i_tp. Tensor parallelism runs within a row (the fast links inside one
machine), data parallelism down a column (across machines) — Megatron-LM's placement
(Narayanan et al., arXiv:2104.04473, section 3). The same grid with pipeline stages in its rows
gives data parallel over pipelines (``workers.mesh_pp_check``); a third axis adds the same way;
``torch.distributed.device_mesh.init_device_mesh`` is PyTorch's version of this.
Taught in chapter 04 (solutions/04_parallel).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.distributed as dist


@dataclass
class Mesh2D:
    """This rank's place in a (dp, tp) grid and its two process groups."""

    dp: int
    tp: int
    dp_rank: int
    tp_rank: int
    dp_group: dist.ProcessGroup
    tp_group: dist.ProcessGroup


def mesh_ranks(dp: int, tp: int) -> tuple[list[list[int]], list[list[int]]]:
    """(tp groups = rows, dp groups = columns) of a dp × tp grid, as lists of global ranks."""
    rows = [[i * tp + j for j in range(tp)] for i in range(dp)]
    cols = [[i * tp + j for i in range(dp)] for j in range(tp)]
    return rows, cols


def make_mesh(dp: int, tp: int) -> Mesh2D:
    """Create every row and column group (all ranks must call this) and return this rank's."""
    world, rank = dist.get_world_size(), dist.get_rank()
    if dp * tp != world:
        raise ValueError(f"dp × tp = {dp} × {tp} must equal the world size {world}")
    rows, cols = mesh_ranks(dp, tp)
    row_groups = [dist.new_group(r) for r in rows]  # every rank creates every group, same order
    col_groups = [dist.new_group(c) for c in cols]
    i, j = divmod(rank, tp)
    return Mesh2D(dp, tp, i, j, col_groups[j], row_groups[i])
