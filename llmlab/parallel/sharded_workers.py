"""Workers (run on k processes by :func:`~llmlab.parallel.launch.launch`) that check
:class:`~llmlab.parallel.zero_optim.ShardedOptimizer` (ZeRO-1/2, Rajbhandari et al.,
arXiv:1910.02054) and :func:`~llmlab.parallel.fsdp.fully_shard` with mixed precision (FSDP, Zhao
et al., arXiv:2304.11277) against PyTorch's own and against one process.

Every rank builds the same tiny GPT from the same seed and trains on its half of each global
batch; the one-process references run on every rank. Each worker returns a dict of numbers.
Taught in chapter 04 (solutions/04_parallel).
"""

from __future__ import annotations

import copy
import math

import torch
import torch.distributed as dist
from torch import nn

from llmlab.parallel.fsdp import MixedPrecisionPolicy, full_parameters, fully_shard
from llmlab.parallel.workers import batch, max_diff, my_slice, params_of, tiny_gpt, token_loss
from llmlab.parallel.zero_optim import ShardedOptimizer


def param_groups(model: nn.Module, lr: float) -> list[dict]:
    """Two groups with their own options: matrices decay (lr), norms do not (2·lr)."""
    decay = [p for p in model.parameters() if p.dim() >= 2]
    rest = [p for p in model.parameters() if p.dim() < 2]
    return [{"params": decay, "weight_decay": 0.1, "lr": lr},
            {"params": rest, "weight_decay": 0.0, "lr": 2 * lr}]


def _schedule(opt: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LRScheduler:
    """Linear warm-up over 3 steps, then cosine decay: every step's lr differs."""
    return torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / 3) * 0.5 * (1 + math.cos(math.pi * min(s, 20) / 20)))


def _half_grads(model: nn.Module, step: int, n: int) -> None:
    """One process: the gradient of the global batch as the mean of the n ranks' gradients (the
    arithmetic of data parallelism: each rank's mean loss, summed, divided by n)."""
    idx, tgt = batch(step)
    total = None
    for part in range(n):
        model.zero_grad()
        token_loss(model(idx.chunk(n)[part]), tgt.chunk(n)[part]).backward()
        grads = [p.grad.clone() for p in model.parameters()]
        total = grads if total is None else [a + b for a, b in zip(total, grads)]
    for p, g in zip(model.parameters(), total or []):
        p.grad = g / n


def _my_grads(model: nn.Module, step: int) -> None:
    idx, tgt = batch(step)
    model.zero_grad()
    token_loss(model(my_slice(idx)), my_slice(tgt)).backward()


def _state_bytes(state) -> int:
    return sum(v.numel() * v.element_size() for st in state.values() for v in st.values()
               if isinstance(v, torch.Tensor))


def zero_optimizer_check(steps: int = 10, lr: float = 1e-2) -> dict:
    """ShardedOptimizer (stages 1, 2; AdamW with two parameter groups and an LR schedule; SGD
    with momentum) vs the unsharded optimizer on one process and vs torch's
    ``ZeroRedundancyOptimizer``; optimizer-state and gradient bytes on this rank; a consolidated
    state dict vs the unsharded one; a checkpoint taken halfway and resumed."""
    from torch.distributed.optim import ZeroRedundancyOptimizer

    n = dist.get_world_size()
    out: dict = {"diff": {}, "state_bytes": {}, "grad_bytes": {}}
    plain = {}
    for name, cls, kw in (("adamw", torch.optim.AdamW, {}),
                          ("sgd", torch.optim.SGD, {"momentum": 0.9})):
        model = tiny_gpt()
        opt = cls(param_groups(model, lr), **kw)
        sched = _schedule(opt)
        for s in range(steps):
            _half_grads(model, s, n)
            opt.step()
            sched.step()
        plain[name] = (params_of(model), opt)
    out["state_bytes"]["unsharded"] = _state_bytes(plain["adamw"][1].state)
    out["largest_param_state_bytes"] = 2 * 4 * max(p.numel() for p in tiny_gpt().parameters())

    def train(make, stop=steps, model=None, opt=None, sched=None):
        model = model or tiny_gpt()
        if opt is None:
            inner = getattr(model, "module", model)  # DDP's groups: its module's parameters
            opt = make(param_groups(inner, lr))
            sched = _schedule(opt)
        for s in range(sched.last_epoch, stop):
            _my_grads(model, s)
            opt.step()
            sched.step()
        return model, opt, sched

    def sharded(groups, stage):
        if stage == 1:
            return ShardedOptimizer(groups, torch.optim.AdamW, stage=1)
        opt = ShardedOptimizer(groups[:1], torch.optim.AdamW, stage=2)
        opt.add_param_group(groups[1])  # the second group added later, as torch allows
        return opt

    for stage in (1, 2):
        model, opt, _ = train(lambda g, s=stage: sharded(g, s))
        out["diff"][f"stage{stage}"] = max_diff(params_of(model), plain["adamw"][0])
        out["state_bytes"][f"stage{stage}"] = _state_bytes(opt.state)
        out["grad_bytes"][f"stage{stage}"] = sum(p.grad.numel() * 4 for p in model.parameters()
                                                 if p.grad is not None)
        out["names_kept"] = [k for k, _ in model.named_parameters()] == \
            [k for k, _ in tiny_gpt().named_parameters()]
    out["grad_bytes"]["unsharded"] = sum(p.numel() * 4 for p in tiny_gpt().parameters())
    model, _, _ = train(lambda g: ShardedOptimizer(g, torch.optim.SGD, momentum=0.9))
    out["diff"]["sgd"] = max_diff(params_of(model), plain["sgd"][0])
    ddp = torch.nn.parallel.DistributedDataParallel(tiny_gpt())  # DDP averages the gradients
    train(lambda g: ShardedOptimizer(g, torch.optim.AdamW, reduce_gradients=False),
          model=ddp, opt=None)
    out["diff"]["under_ddp"] = max_diff(params_of(ddp.module), plain["adamw"][0])

    def torch_zero(groups):
        opt = ZeroRedundancyOptimizer(groups[0]["params"], torch.optim.AdamW, lr=lr,
                                      weight_decay=0.1)
        opt.add_param_group(groups[1])
        return opt

    model = tiny_gpt()
    opt = torch_zero(param_groups(model, lr))
    sched = _schedule(opt)
    for s in range(steps):  # torch's ZeRO takes averaged gradients (DDP's job): average them
        _my_grads(model, s)
        for p in model.parameters():
            dist.all_reduce(p.grad)
            p.grad /= n
        opt.step()
        sched.step()
    out["diff"]["torch_zero_vs_plain"] = max_diff(params_of(model), plain["adamw"][0])
    out["state_bytes"]["torch_zero"] = _state_bytes(opt.optim.state)

    # Checkpoint halfway: consolidate onto rank 0, send to all, resume in a fresh optimizer.
    make = lambda g: ShardedOptimizer(g, torch.optim.AdamW)  # noqa: E731
    model, opt, sched = train(make, stop=steps // 2)
    opt.consolidate_state_dict(to=0)
    sd = [opt.state_dict() if dist.get_rank() == 0 else None]
    if dist.get_rank() != 0:
        try:
            opt.state_dict()
            out["state_dict_off_root_raises"] = False
        except RuntimeError:
            out["state_dict_off_root_raises"] = True
    dist.broadcast_object_list(sd, src=0)
    half = tiny_gpt()  # the unsharded optimizer's state after as many steps
    ref_opt = torch.optim.AdamW(param_groups(half, lr))
    ref_sched = _schedule(ref_opt)
    for s in range(steps // 2):
        _half_grads(half, s, n)
        ref_opt.step()
        ref_sched.step()
    ref_sd = ref_opt.state_dict()
    out["state_dict_diff"] = max(float((sd[0]["state"][i][k] - v).abs().max())
                                 for i, st in ref_sd["state"].items() for k, v in st.items())
    out["state_dict_lrs"] = [g["lr"] for g in sd[0]["param_groups"]]
    out["plain_lrs"] = [g["lr"] for g in ref_sd["param_groups"]]
    resumed = copy.deepcopy(model)
    opt2 = make(param_groups(resumed, lr))
    sched2 = _schedule(opt2)  # torch's order: build both, then load both
    opt2.load_state_dict(sd[0])
    sched2.load_state_dict(sched.state_dict())
    train(make, model=resumed, opt=opt2, sched=sched2)
    out["diff"]["resumed"] = max_diff(params_of(resumed), plain["adamw"][0])
    return out


MIXED = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)


def _mixed_reference(steps: int, lr: float, n: int) -> dict[str, torch.Tensor]:
    """One process doing FSDP's casts: fp32 master weights; each step every rank's half batch
    runs forward and backward on a bf16 copy, each half's gradient is cast to fp32, the halves
    are summed and divided by n, and AdamW updates the fp32 masters."""
    master = tiny_gpt()
    opt = torch.optim.AdamW(master.parameters(), lr=lr, weight_decay=0.1)
    for s in range(steps):
        idx, tgt = batch(s)
        total = None
        for part in range(n):
            low = copy.deepcopy(master).to(torch.bfloat16)
            token_loss(low(idx.chunk(n)[part]).float(), tgt.chunk(n)[part]).backward()
            grads = [p.grad.float() for p in low.parameters()]
            total = grads if total is None else [a + b for a, b in zip(total, grads)]
        for p, g in zip(master.parameters(), total or []):
            p.grad = g / n
        opt.step()
    return params_of(master)


def _shard_blocks_then_root(model: nn.Module, shard, **kw) -> nn.Module:
    for block in model.blocks:
        shard(block, **kw)
    shard(model, **kw)
    return model


def fsdp_mixed_check(steps: int = 3, lr: float = 1e-2) -> dict:
    """llmlab's ``fully_shard`` with bf16 compute, fp32 masters and fp32 gradient reduction vs
    torch FSDP2 (``fully_shard`` + ``MixedPrecisionPolicy``) and vs one process doing the same
    casts; also without the policy (fp32), which must differ from the mixed reference."""
    from torch.distributed.fsdp import MixedPrecisionPolicy as TorchPolicy
    from torch.distributed.fsdp import fully_shard as torch_fully_shard

    n = dist.get_world_size()
    names = [k for k, _ in tiny_gpt().named_parameters()]
    out: dict = {}
    ours = _shard_blocks_then_root(tiny_gpt(), fully_shard, mp_policy=MIXED)
    theirs = _shard_blocks_then_root(tiny_gpt(), torch_fully_shard,
                                     mp_policy=TorchPolicy(param_dtype=torch.bfloat16,
                                                           reduce_dtype=torch.float32))
    fp32 = _shard_blocks_then_root(tiny_gpt(), fully_shard)
    seen: list[torch.dtype] = []
    ours.blocks[0].attn.q_proj.register_forward_hook(
        lambda m, i, o: seen.append(m.weight.dtype))
    models = (ours, theirs, fp32)
    opts = [torch.optim.AdamW(m.parameters(), lr=lr, weight_decay=0.1) for m in models]
    for s in range(steps):
        idx, tgt = batch(s)
        for m, opt in zip(models, opts):
            opt.zero_grad()
            logits = m(my_slice(idx))
            if m is ours:
                out["logits_dtype"] = str(logits.dtype)
            token_loss(logits.float(), my_slice(tgt)).backward()
            if m is ours:
                out["grad_dtypes"] = sorted({str(p.grad.dtype) for p in m.parameters()})
            opt.step()
    out["compute_dtype"] = str(seen[0])
    out["names"] = [k for k, _ in ours.named_parameters()] == names
    out["master_dtypes"] = sorted({str(p.dtype) for p in ours.parameters()})
    theirs_local = {k: p.to_local().detach() for k, p in theirs.named_parameters()}
    out["local_shapes_match"] = all(p.shape == theirs_local[k].shape
                                    for k, p in ours.named_parameters())
    out["local_vs_torch"] = max(float((p.detach() - theirs_local[k]).abs().max())
                                for k, p in ours.named_parameters() if p.numel())
    ours_full = full_parameters(ours)
    out["full_vs_torch"] = max_diff(ours_full,
                                    {k: p.full_tensor() for k, p in theirs.named_parameters()})
    ref = _mixed_reference(steps, lr, n)
    out["full_vs_reference"] = max_diff(ours_full, ref)
    out["fp32_vs_reference"] = max_diff(full_parameters(fp32), ref)
    out["held_fraction"] = (sum(p.numel() for p in ours.parameters())
                            / sum(p.numel() for p in tiny_gpt().parameters()))
    return out


__all__ = ["fsdp_mixed_check", "param_groups", "zero_optimizer_check"]
