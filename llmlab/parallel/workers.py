"""Worker functions that check each strategy against single-process training on k processes.

Each runs inside ``launch(fn, k)`` (or under ``torchrun``: ``python -m torch.distributed.run
--nproc_per_node 2 -m llmlab.parallel.launch llmlab.parallel.workers:collectives_check``) and
returns a dict of numbers: largest differences from the single-process reference, bytes sent,
bytes held. Every rank builds the same tiny GPT from the same seed, so the reference is computed
locally on every rank. The tests, the chapter and the benchmark call these.
Taught in chapter 04 (solutions/04_parallel).
"""

from __future__ import annotations

import contextlib
import copy
import math

import torch
import torch.distributed as dist
import torch.nn.functional as F

from llmlab.model import GPT, GPTConfig
from llmlab.parallel.collectives import (
    chain_broadcast,
    ring_all_gather,
    ring_all_reduce,
    ring_bytes,
    ring_reduce_scatter,
)
from llmlab.parallel.comm import DistComm
from llmlab.parallel.context_parallel import ring_attention, ulysses_attention
from llmlab.parallel.ddp import DDP
from llmlab.parallel.groups import DistGroup
from llmlab.parallel.moe import ExpertParallelMoE, MoE, MoEConfig
from llmlab.parallel.pipeline import SCHEDULES, run_schedule, split_gpt
from llmlab.parallel.tensor_parallel import TensorParallelGPT
from llmlab.parallel.zero import ZeroOptimizer, zero3
from llmlab.train.optim import AdamW

TINY = dict(vocab_size=64, block_size=32, n_layer=2, n_head=4, n_kv_head=2, d_model=32)


def tiny_gpt(seed: int = 0, **overrides) -> GPT:
    """The small Llama-style GPT every check trains (same weights on every rank)."""
    torch.manual_seed(seed)
    return GPT(GPTConfig(**{**TINY, **overrides}))


def batch(seed: int, size: int = 8, seq: int = 16, vocab: int = 64):
    """A global batch (idx, targets), identical on every rank."""
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, vocab, (size, seq + 1), generator=g)
    return idx[:, :-1], idx[:, 1:]


def my_slice(x: torch.Tensor, group=None) -> torch.Tensor:
    """This rank's contiguous share of the batch (dim 0)."""
    return x.chunk(dist.get_world_size(group))[dist.get_rank(group)]


def token_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over every token: (batch, seq, vocab), (batch, seq) -> scalar."""
    return F.cross_entropy(logits.flatten(0, 1), targets.flatten())


def max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    return max(float((a[k] - b[k]).detach().abs().max()) for k in a)


def params_of(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.named_parameters()}


def train_reference(steps: int, lr: float = 1e-2, **overrides) -> GPT:
    """One process, whole batch, llmlab's AdamW: what every strategy must reproduce."""
    model = tiny_gpt(**overrides)
    opt = AdamW(model.parameters(), lr=lr, weight_decay=0.1)
    for s in range(steps):
        idx, tgt = batch(s)
        opt.zero_grad()
        model.loss(idx, tgt).backward()
        opt.step()
    return model


def collectives_check(n_elements: int = 1000) -> dict:
    """Ring collectives from send/recv vs torch.distributed's, and bytes sent vs α-β formulas."""
    rank, n = dist.get_rank(), dist.get_world_size()
    x = torch.randn(n_elements, generator=torch.Generator().manual_seed(rank))
    comm = DistComm()
    ref = x.clone()
    dist.all_reduce(ref)
    out = {"all_reduce": float((ring_all_reduce(x, comm) - ref).abs().max()),
           "all_reduce_bytes": comm.bytes_sent,
           "all_reduce_formula": ring_bytes("all_reduce", x.numel() * 4, n)}
    comm.bytes_sent = 0
    mine = ring_reduce_scatter(x, comm)
    out["reduce_scatter"] = float((mine - ref.tensor_split(n)[rank]).abs().max())
    out["reduce_scatter_bytes"] = comm.bytes_sent
    comm.bytes_sent = 0
    gathered = ring_all_gather(x[:10], comm)
    ref_g = [torch.empty(10) for _ in range(n)]
    dist.all_gather(ref_g, x[:10])
    out["all_gather"] = float((gathered - torch.cat(ref_g)).abs().max())
    out["all_gather_bytes"] = comm.bytes_sent
    comm.bytes_sent = 0
    b = chain_broadcast(x, 0, comm)
    ref_b = x.clone()
    dist.broadcast(ref_b, 0)
    out["broadcast"] = float((b - ref_b).abs().max())
    out["broadcast_bytes"] = comm.bytes_sent
    return out


def ddp_check(steps: int = 3, bucket_bytes: int = 4096, overlap: bool = True) -> dict:
    """llmlab DDP and torch DDP (each rank half the batch) vs one process on the whole batch."""
    ref = params_of(train_reference(steps))
    ours = DDP(tiny_gpt(), bucket_bytes=bucket_bytes, overlap=overlap)
    theirs = torch.nn.parallel.DistributedDataParallel(tiny_gpt())
    opts = [AdamW(m.parameters(), lr=1e-2, weight_decay=0.1) for m in (ours, theirs)]
    for s in range(steps):
        idx, tgt = batch(s)
        idx, tgt = my_slice(idx), my_slice(tgt)
        for model, opt in zip((ours, theirs), opts):
            opt.zero_grad()
            F.cross_entropy(model(idx).flatten(0, 1), tgt.flatten()).backward()
            if model is ours:
                ours.finish_gradient_sync()
            opt.step()
    return {"ours_vs_single": max_diff(params_of(ours.module), ref),
            "torch_vs_single": max_diff(params_of(theirs.module), ref),
            "n_buckets": len(ours.buckets), "bytes_reduced": ours.bytes_reduced,
            "param_bytes": sum(p.numel() * 4 for p in ours.parameters())}


def held_bytes(tensors) -> int:
    """Bytes of the distinct storages among ``tensors`` (parameters, grads, optimizer states)."""
    seen = {}
    for t in tensors:
        if isinstance(t, torch.Tensor) and t.dim() > 0:
            seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
    return sum(seen.values())


def _state_tensors(model, opt) -> list[torch.Tensor]:
    params = list(model.parameters())
    return (params + [p.grad for p in params if p.grad is not None]
            + [v for st in opt.state.values() for v in st.values()])


def train_sliced(model, opt, steps: int) -> None:
    """``steps`` optimizer steps of ``model`` on this rank's slice of each global batch."""
    for s in range(steps):
        idx, tgt = batch(s)
        opt.zero_grad()
        F.cross_entropy(model(my_slice(idx)).flatten(0, 1), my_slice(tgt).flatten()).backward()
        opt.step()


def fail_on_rank(bad_rank: int = 1) -> None:
    """Rank ``bad_rank`` raises; the others wait in an all-reduce it never joins. ``launch``
    must fail with that rank's ValueError, not hang."""
    if dist.get_rank() == bad_rank:
        raise ValueError(f"rank {bad_rank} fails on purpose")
    dist.all_reduce(torch.ones(1))


def zero_check(steps: int = 3, fsdp: bool = True, ring: bool = False) -> dict:
    """ZeRO-1/2/3 (and PyTorch FSDP2's ``fully_shard``) vs plain AdamW on one process; model-state
    bytes each rank holds after a step."""
    ref_model = train_reference(steps)
    ref = params_of(ref_model)
    out = {"psi": sum(p.numel() for p in ref_model.parameters()), "held": {}, "diff": {},
           "sent": {}}
    ref_opt = AdamW(ref_model.parameters(), lr=1e-2, weight_decay=0.1)
    ref_model.loss(*batch(0)).backward()
    ref_opt.step()
    out["held"][0] = held_bytes(_state_tensors(ref_model, ref_opt))
    for stage in (1, 2, 3):
        model = tiny_gpt()
        if stage < 3:
            opt = ZeroOptimizer(model.parameters(), stage, lr=1e-2, weight_decay=0.1,
                                comm=DistComm() if ring else None)
            run = model
        else:
            run = zero3(model)
            opt = AdamW(run.parameters(), lr=1e-2, weight_decay=0.1)
        train_sliced(run, opt, steps)
        if stage < 3:
            got = params_of(model)
            out["held"][stage] = held_bytes(_state_tensors(model, opt.optimizer) + [
                p.grad for p in opt.params if p.grad is not None] + [opt.shard.grad])
            out["sent"][stage] = opt.bytes_sent / steps
        else:
            got = {}
            for unit in [run, *run.module.blocks]:
                prefix = "" if unit is run else f"blocks.{list(run.module.blocks).index(unit)}."
                got.update({prefix + k: v for k, v in unit.full_parameters().items()})
            out["held"][3] = held_bytes(_state_tensors(run, opt))
        out["diff"][stage] = max_diff(got, ref)
    if fsdp:
        from torch.distributed.fsdp import fully_shard

        model = tiny_gpt()
        for block in model.blocks:
            fully_shard(block)
        fully_shard(model)
        train_sliced(model, AdamW(model.parameters(), lr=1e-2, weight_decay=0.1), steps)
        got = {k: v.full_tensor() for k, v in model.named_parameters()}
        out["diff"]["fsdp2"] = max_diff(got, {k: ref[k] for k in got})
    return out


def _grads(model) -> dict[str, torch.Tensor]:
    return {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}


def _tp_vs_dense(dense, idx: torch.Tensor, tgt: torch.Tensor, sp: bool) -> tuple[float, float]:
    """(|TP loss − dense loss|, largest gradient difference), dense grads already in ``dense``."""
    rank, n = dist.get_rank(), dist.get_world_size()
    ref = _grads(dense)
    loss = dense.loss(idx, tgt).item()
    tp = TensorParallelGPT(dense, sequence_parallel=sp)
    tp.zero_grad()
    tp_loss = tp.loss(idx, tgt)
    tp_loss.backward()
    tp.sync_replicated_grads()
    worst = 0.0
    for name, p in tp.model.named_parameters():
        g = ref[name.replace(".module.", ".")]
        if p.shape != g.shape:  # a shard: find which slice of the dense gradient it is
            dim = 0 if p.shape[1] == g.shape[1] else 1
            g = g.chunk(n, dim)[rank]
        worst = max(worst, float((p.grad - g).abs().max()))
    return abs(tp_loss.item() - loss), worst


def tp_check() -> dict:
    """Megatron TP (with and without sequence parallelism) vs the dense model: loss, grads."""
    dense = tiny_gpt(tie_embeddings=False)
    idx, tgt = batch(0)
    dense.loss(idx, tgt).backward()
    out = {}
    for sp in (False, True):
        tag = "sp" if sp else "tp"
        out[f"{tag}_loss"], out[f"{tag}_grad"] = _tp_vs_dense(dense, idx, tgt, sp)
    return out


def tp_book_check(ids: list[list[int]]) -> dict:
    """The book's model split over the ranks (heads, MLP units, vocabulary) on real token ids
    (batch, seq + 1): loss and gradients vs the dense model."""
    from llmlab.model import load_book_model

    dense = load_book_model()[0].train()
    data = torch.tensor(ids)
    idx, tgt = data[:, :-1], data[:, 1:]
    dense.loss(idx, tgt).backward()
    loss_diff, grad_diff = _tp_vs_dense(dense, idx, tgt, sp=False)
    return {"loss": dense.loss(idx, tgt).item(), "loss_diff": loss_diff, "grad_diff": grad_diff,
            "params_here": sum(p.numel() for p in TensorParallelGPT(dense).parameters()),
            "params_dense": dense.num_params()}


def pipeline_check(n_micro: int = 4) -> dict:
    """GPipe and 1F1B on p = world size stages vs one backward of the whole batch."""
    rank, p = dist.get_rank(), dist.get_world_size()
    dense = tiny_gpt(tie_embeddings=False, n_layer=2 * p)
    idx, tgt = batch(0)
    dense.loss(idx, tgt).backward()
    ref = _grads(dense)
    out = {}
    for name, make in SCHEDULES.items():
        model = copy.deepcopy(dense)
        model.zero_grad()
        stage = split_gpt(model, p)[rank]
        res = run_schedule(stage, make(p, n_micro)[rank], list(idx.chunk(n_micro)),
                           list(tgt.chunk(n_micro)),
                           token_loss,
                           (idx.shape[0] // n_micro, idx.shape[1], dense.config.d_model))
        got = {k: v.grad for k, v in model.named_parameters() if v.grad is not None}
        out[f"{name}_grad"] = max(float((got[k] - ref[k]).abs().max()) for k in got)
        out[f"{name}_n_grads"] = len(got)
        out[f"{name}_timeline"] = res["timeline"]
    out["n_params"] = len(ref)
    return out


def moe_check() -> dict:
    """Expert parallelism (all_to_all) vs the single-process MoE: outputs and gradients."""
    n = dist.get_world_size()
    torch.manual_seed(0)
    moe = MoE(16, 32, MoEConfig(n_experts=4, top_k=2, n_shared=1))
    x = torch.randn(2 * n, 6, 16, generator=torch.Generator().manual_seed(1))
    w = torch.randn(2 * n, 6, 16, generator=torch.Generator().manual_seed(2))
    ep = ExpertParallelMoE(copy.deepcopy(moe))
    y = moe(x)
    (y * w).sum().backward()
    ref = _grads(moe)
    y_ep = ep(my_slice(x))
    (y_ep * my_slice(w)).sum().backward()
    worst = 0.0
    for name, p in ep.moe.named_parameters():
        g = p.grad.clone()
        if name.startswith("experts."):
            i, rest = name.split(".", 2)[1:]
            key = f"experts.{ep.first + int(i)}.{rest}"
        else:  # replicated router / shared expert: each rank saw its own tokens
            dist.all_reduce(g)
            key = name
        worst = max(worst, float((g - ref[key]).abs().max()))
    return {"out": float((y_ep - my_slice(y)).detach().abs().max()), "grad": worst}


def cp_check(seq: int = 16) -> dict:
    """Ring attention and Ulysses vs full causal attention: outputs and q/k/v gradients."""
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 4, seq, 8, generator=gen, requires_grad=True) for _ in range(3))
    w = torch.randn(2, 4, seq, 8, generator=gen)
    ref = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    (ref * w).sum().backward()
    out = {}
    for name, fn in (("ring", ring_attention), ("ulysses", ulysses_attention)):
        parts = [my_slice(t.detach().transpose(0, 2)).transpose(0, 2).requires_grad_()
                 for t in (q, k, v)]  # my chunk of the sequence (dim 2)
        y = fn(*parts)
        (y * my_slice(w.transpose(0, 2)).transpose(0, 2)).sum().backward()
        out[f"{name}_out"] = (y - my_slice(ref.transpose(0, 2)).transpose(0, 2)).abs().max().item()
        out[f"{name}_grad"] = max(
            float((p.grad - my_slice(t.grad.transpose(0, 2)).transpose(0, 2)).abs().max())
            for p, t in zip(parts, (q, k, v)))
    return out


def mesh_check(steps: int = 2) -> dict:
    """2-D mesh on 4 ranks: DDP over dp=2 of a tensor-parallel (tp=2) GPT vs one process."""
    from llmlab.parallel.mesh import make_mesh

    mesh = make_mesh(2, 2)
    ref = train_reference(steps, tie_embeddings=False)
    tp = TensorParallelGPT(tiny_gpt(tie_embeddings=False), mesh.tp_group)
    model = DDP(tp, bucket_bytes=1 << 20, group=mesh.dp_group)
    opt = AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    for s in range(steps):
        idx, tgt = batch(s)
        opt.zero_grad()
        tp.loss(my_slice(idx, mesh.dp_group), my_slice(tgt, mesh.dp_group)).backward()
        model.finish_gradient_sync()
        opt.step()
    worst = 0.0
    dense = params_of(ref)
    for name, p in tp.model.named_parameters():
        r = dense[name.replace(".module.", ".")]
        if p.shape != r.shape:
            dim = 0 if p.shape[1] == r.shape[1] else 1
            r = r.chunk(2, dim)[mesh.tp_rank]
        worst = max(worst, float((p.detach() - r).abs().max()))
    return {"diff": worst, "dp_rank": mesh.dp_rank, "tp_rank": mesh.tp_rank}


def mesh_pp_check(steps: int = 2, n_micro: int = 2) -> dict:
    """2-D mesh on 4 ranks, the other composition: data parallel (dp=2) over a two-stage 1F1B
    pipeline (pp=2) vs one process. Rows of the grid are pipelines, columns data-parallel groups;
    each stage's gradients are averaged over its column before AdamW."""
    from llmlab.parallel.mesh import make_mesh

    mesh = make_mesh(2, 2)  # the grid's inner axis (rows) holds the pipeline stages here
    ref = params_of(train_reference(steps, tie_embeddings=False))
    model = tiny_gpt(tie_embeddings=False)
    stage = split_gpt(model, 2)[mesh.tp_rank]
    opt = AdamW(stage.parameters(), lr=1e-2, weight_decay=0.1)
    steps_1f1b = SCHEDULES["1f1b"](2, n_micro)[mesh.tp_rank]
    for s in range(steps):
        idx, tgt = (my_slice(t, mesh.dp_group) for t in batch(s))
        opt.zero_grad()
        run_schedule(stage, steps_1f1b, list(idx.chunk(n_micro)), list(tgt.chunk(n_micro)),
                     token_loss,
                     (idx.shape[0] // n_micro, idx.shape[1], model.config.d_model), group=mesh.tp_group)
        for p in stage.parameters():
            dist.all_reduce(p.grad, group=mesh.dp_group)
            p.grad /= mesh.dp
        opt.step()
    mine = {id(p) for p in stage.parameters()}
    diffs = [float((p.detach() - ref[name]).abs().max()) for name, p in model.named_parameters()
             if id(p) in mine]
    return {"diff": max(diffs), "n_params": len(diffs), "dp_rank": mesh.dp_rank,
            "pp_rank": mesh.tp_rank}


def ddp_step_time(overlap: bool, steps: int = 5, d_model: int = 128, n_layer: int = 4) -> float:
    """Median seconds per DDP training step (forward, backward, gradient sync, AdamW)."""
    import statistics
    import time

    model = DDP(tiny_gpt(d_model=d_model, n_layer=n_layer, n_head=4), bucket_bytes=1 << 16,
                overlap=overlap)
    opt = AdamW(model.parameters(), lr=1e-3)
    times = []
    for s in range(steps + 1):
        idx, tgt = batch(s, size=8, seq=32)
        dist.barrier()
        start = time.perf_counter()
        opt.zero_grad()
        F.cross_entropy(model(my_slice(idx)).flatten(0, 1), my_slice(tgt).flatten()).backward()
        model.finish_gradient_sync()
        opt.step()
        times.append(time.perf_counter() - start)
    return statistics.median(times[1:])  # the first step warms up


def pipeline_timeline(schedule: str, n_micro: int, d_model: int = 64) -> list:
    """This rank's measured (op, mb, start, end) steps of one pipelined step (2 layers per
    stage), times on the machine's monotonic clock."""
    p = dist.get_world_size()
    model = tiny_gpt(tie_embeddings=False, n_layer=2 * p, d_model=d_model)
    idx, tgt = batch(0, size=2 * n_micro, seq=32)
    stage = split_gpt(model, p)[dist.get_rank()]
    run_schedule(stage, SCHEDULES[schedule](p, n_micro)[dist.get_rank()],
                 list(idx.chunk(n_micro)), list(tgt.chunk(n_micro)),
                 token_loss,
                 (2, 32, d_model))  # warm-up
    dist.barrier()
    res = run_schedule(stage, SCHEDULES[schedule](p, n_micro)[dist.get_rank()],
                       list(idx.chunk(n_micro)), list(tgt.chunk(n_micro)),
                       token_loss,
                       (2, 32, d_model))
    return res["timeline"]


def ddp_source_check(sources: list[str] | None, name: str = "DDP", steps: int = 2,
                     bucket_bytes: int = 4096) -> dict:
    """A DDP class on real processes vs one process on the whole batch: each rank starts from
    its own weights (seed = rank) and trains the tiny GPT on its half of each batch.

    ``sources``: the cells that define the class ``name`` (a notebook's answer: new processes
    cannot import a notebook's cells, so its source travels), run in a namespace with ``torch``,
    ``nn``, ``F``, ``contextlib`` and ``math``; the class is built as
    ``cls(module, DistGroup(), bucket_bytes)`` and its ``finish_gradient_sync()`` runs after
    each backward. ``None``: llmlab's :class:`DDP`."""
    if sources:
        ns: dict = {"torch": torch, "nn": torch.nn, "F": F, "contextlib": contextlib,
                    "math": math}
        for source in sources:
            exec(compile(source, f"<{name} cell>", "exec"), ns)  # noqa: S102 - the learner's own cell
        cls = ns[name]
        make = lambda m: cls(m, DistGroup(), bucket_bytes)  # noqa: E731
    else:
        make = lambda m: DDP(m, bucket_bytes=bucket_bytes)  # noqa: E731
    ref = params_of(train_reference(steps))
    model = tiny_gpt(seed=dist.get_rank())  # rank 0 holds the reference's start; the others not
    ddp = make(model)
    opt = AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    for s in range(steps):
        idx, tgt = batch(s)
        opt.zero_grad()
        token_loss(ddp(my_slice(idx)), my_slice(tgt)).backward()
        ddp.finish_gradient_sync()
        opt.step()
    return {"vs_single": max_diff(params_of(model), ref)}
