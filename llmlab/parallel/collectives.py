"""Collectives built from point-to-point messages on a ring, and their α-β cost.

Ring all-reduce = ring reduce-scatter then ring all-gather (Patarasuk & Yuan, "Bandwidth
optimal all-reduce algorithms for clusters of workstations", JPDC 2009; the algorithm NCCL and
Horovod use, Sergeev & Del Balso, arXiv:1802.05799). The buffer is cut into N chunks; in each of
N−1 steps every rank sends one chunk to its right neighbour and receives one from its left, so
every link is busy and each rank sends 2(N−1)/N of the buffer in total — independent of N.

α-β model (Hockney 1994; Thakur, Rabenseifner & Gropp, "Optimization of Collective
Communication Operations in MPICH", IJHPCA 2005): sending m bytes costs α + m β. For a buffer of
n bytes on N ranks:

=================  =====================  ==============================
collective          bytes sent per rank    time
=================  =====================  ==============================
reduce-scatter      (N−1)/N · n            (N−1) α + (N−1)/N · n β
all-gather          (N−1)/N · n            (N−1) α + (N−1)/N · n β
all-reduce          2 (N−1)/N · n          2(N−1) α + 2 (N−1)/N · n β
broadcast (chain)   n (root and relays)    (N−1+c−1)(α + n/c β), c chunks
=================  =====================  ==============================

(n is the full buffer: the input of reduce-scatter, the output of all-gather.) The functions take
any :class:`~llmlab.parallel.comm.Comm`: real processes or simulated threads.
Taught in chapter 04 (solutions/04_parallel).
"""

from __future__ import annotations

import torch

from llmlab.parallel.comm import Comm


def _chunks(flat: torch.Tensor, n: int) -> list[torch.Tensor]:
    """n views covering ``flat`` (sizes differ by at most one element)."""
    return list(torch.tensor_split(flat, n))


def ring_reduce_scatter(x: torch.Tensor, comm: Comm) -> torch.Tensor:
    """Sum ``x`` over ranks and return this rank's chunk of the sum.

    x: (n,) on every rank -> (≈ n/N,): chunk ``comm.rank`` of ``torch.tensor_split(sum, N)``.
    Step s: send chunk (r−s−1) mod N right, receive chunk (r−s−2) mod N from the left and add.
    """
    if x.dim() != 1:
        raise ValueError(f"ring_reduce_scatter expects a flat (n,) tensor, got {tuple(x.shape)}")
    r, n = comm.rank, comm.world_size
    buf = _chunks(x.clone(), n)
    for s in range(n - 1):
        send, recv = (r - s - 1) % n, (r - s - 2) % n
        incoming = torch.empty_like(buf[recv])
        comm.sendrecv(buf[send], (r + 1) % n, incoming, (r - 1) % n)
        buf[recv] += incoming
    return buf[r]


def ring_all_gather(chunk: torch.Tensor, comm: Comm, sizes: list[int] | None = None) -> torch.Tensor:
    """Concatenate every rank's ``chunk`` in rank order.

    chunk: (m_r,) -> (sum_r m_r,). ``sizes`` gives every rank's m_r (default: all equal).
    Step s: send chunk (r−s) mod N right, receive chunk (r−s−1) mod N from the left.
    """
    r, n = comm.rank, comm.world_size
    sizes = sizes or [chunk.numel()] * n
    if len(sizes) != n or sizes[r] != chunk.numel():
        raise ValueError(f"sizes {sizes} must list {n} chunk sizes with sizes[{r}] = "
                         f"{chunk.numel()}")
    buf = list(torch.split(torch.empty(sum(sizes), dtype=chunk.dtype), sizes))
    buf[r].copy_(chunk.reshape(-1))
    for s in range(n - 1):
        send, recv = (r - s) % n, (r - s - 1) % n
        comm.sendrecv(buf[send], (r + 1) % n, buf[recv], (r - 1) % n)
    return torch.cat(buf)


def ring_all_reduce(x: torch.Tensor, comm: Comm) -> torch.Tensor:
    """Sum of ``x`` over ranks, on every rank: reduce-scatter, then all-gather. x: (...) -> (...)."""
    flat = x.reshape(-1)
    mine = ring_reduce_scatter(flat, comm)
    sizes = [c.numel() for c in _chunks(flat, comm.world_size)]
    return ring_all_gather(mine, comm, sizes).view_as(x)


def chain_broadcast(x: torch.Tensor, root: int, comm: Comm, n_chunks: int = 4) -> torch.Tensor:
    """``root``'s ``x`` on every rank, passed along the ring root → root+1 → … in ``n_chunks``
    pieces so the relays pipeline. x: (...) -> (...) (only root's values matter)."""
    r, n = comm.rank, comm.world_size
    out = x.clone().reshape(-1)
    pos = (r - root) % n  # distance from the root along the ring
    pieces = _chunks(out, n_chunks)
    # Step t: the rank at distance d forwards piece t - d (if it has it) and receives piece
    # t - d + 1 from its left. Ranks with nothing to do exchange empty tensors.
    empty = out.new_empty(0)
    for t in range(n_chunks + n - 2):
        send_i, recv_i = t - pos, t - pos + 1
        send = pieces[send_i] if pos < n - 1 and 0 <= send_i < n_chunks else empty
        recv = pieces[recv_i] if pos > 0 and 0 <= recv_i < n_chunks else empty
        recv_buf = torch.empty_like(recv)
        comm.sendrecv(send, (r + 1) % n, recv_buf, (r - 1) % n)
        recv.copy_(recv_buf)
    return out.view_as(x)


_STEPS = {"reduce_scatter": 1, "all_gather": 1, "all_reduce": 2}


def ring_bytes(op: str, n_bytes: float, world_size: int) -> float:
    """Bytes each rank sends in a ring ``op`` ("reduce_scatter", "all_gather", "all_reduce",
    "broadcast") on a buffer of ``n_bytes`` (the full buffer)."""
    if op == "broadcast":
        return float(n_bytes)  # the root and every relay send the whole buffer once
    if op not in _STEPS:
        raise ValueError(f"unknown collective {op!r}; expected one of {[*_STEPS, 'broadcast']}")
    return _STEPS[op] * (world_size - 1) / world_size * n_bytes


def ring_time(op: str, n_bytes: float, world_size: int, alpha: float, beta: float,
              n_chunks: int = 1) -> float:
    """α-β time of a ring ``op``: latency α per message, β seconds per byte."""
    if op == "broadcast":
        return (world_size - 1 + n_chunks - 1) * (alpha + n_bytes / n_chunks * beta)
    steps = _STEPS.get(op)
    if steps is None:
        raise ValueError(f"unknown collective {op!r}; expected one of {[*_STEPS, 'broadcast']}")
    return steps * (world_size - 1) * alpha + ring_bytes(op, n_bytes, world_size) * beta
