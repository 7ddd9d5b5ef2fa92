"""In-process checks of llmlab.parallel: schedules, routing, formulas, simulated ranks."""

from __future__ import annotations

import contextlib
import threading

import pytest
import torch

from llmlab.model import GPT, GPTConfig
from llmlab.parallel import (
    LAYER_KINDS,
    LLAMA3_70B,
    Hardware,
    ModelShape,
    MoE,
    MoEConfig,
    Plan,
    bubble_formula,
    bubble_fraction,
    capacity_mask,
    chain_broadcast,
    expert_capacity,
    gpipe_schedule,
    load_balancing_loss,
    make_buckets,
    memory_per_gpu,
    merge_step,
    mesh_ranks,
    moe_aux_loss,
    one_f_one_b_schedule,
    partial_attention,
    peak_in_flight,
    recompute_blocks,
    ring_all_gather,
    ring_all_reduce,
    ring_bytes,
    ring_reduce_scatter,
    run_replay,
    run_threads,
    saved_activation_bytes,
    simulate,
    step_time,
    top_k_route,
    zero_memory,
)
from llmlab.parallel.workers import tiny_gpt


@pytest.mark.parametrize("n", [2, 3, 4])
def test_ring_collectives_on_simulated_ranks(n):
    xs = [torch.randn(37, generator=torch.Generator().manual_seed(r)) for r in range(n)]
    total = torch.stack(xs).sum(0)
    out, sent = run_threads(ring_all_reduce, n, xs)
    for o in out:
        torch.testing.assert_close(o, total)
    assert all(abs(b - ring_bytes("all_reduce", 37 * 4, n)) <= 8 * n for b in sent)
    out, _ = run_threads(ring_reduce_scatter, n, xs)
    torch.testing.assert_close(torch.cat(out), total)
    out, sent = run_threads(ring_all_gather, n, [x[:5] for x in xs])
    assert torch.equal(out[-1], torch.cat([x[:5] for x in xs]))
    assert sent == [ring_bytes("all_gather", 5 * 4 * n, n)] * n
    out, sent = run_threads(chain_broadcast, n, xs, n - 1)
    assert all(torch.equal(o, xs[n - 1]) for o in out) and sent[n - 2] == 0


@pytest.mark.parametrize("n", [1, 3, 4])
def test_replayed_ranks_equal_threads(n):
    """Without threads (the grader's judge) the ranks are replayed: same outputs, same bytes."""
    xs = [torch.randn(10, generator=torch.Generator().manual_seed(r)) for r in range(n)]
    for fn, args in [(ring_all_reduce, (xs,)), (ring_reduce_scatter, (xs,)),
                     (ring_all_gather, ([x[:3] for x in xs],)), (chain_broadcast, (xs, n - 1))]:
        (a, sent_a), (b, sent_b) = run_threads(fn, n, *args), run_replay(fn, n, *args)
        assert all(torch.equal(p, q) for p, q in zip(a, b)) and sent_a == sent_b, fn.__name__


def test_replay_reports_a_deadlock_and_runs_where_threads_cannot_start(monkeypatch):
    def waits_forever(x, comm):
        comm.sendrecv(x, comm.rank, torch.empty_like(x), (comm.rank + 1) % comm.world_size)
        comm.sendrecv(x, comm.rank, torch.empty_like(x), (comm.rank + 1) % comm.world_size)

    with pytest.raises(RuntimeError, match="did not finish"):
        run_replay(waits_forever, 2, [torch.ones(2)] * 2)

    def no_threads(self):
        raise RuntimeError("threads are not available")

    xs = [torch.full((4,), float(r)) for r in range(3)]
    monkeypatch.setattr(threading.Thread, "start", no_threads)
    out, _ = run_threads(ring_all_reduce, 3, xs)
    assert all(torch.equal(o, torch.full((4,), 3.0)) for o in out)


def test_simulated_rank_failure_is_reported():
    def bad(x, comm):
        if comm.rank == 1:
            raise KeyError("boom")
        return ring_all_reduce(x, comm)

    with pytest.raises(RuntimeError, match="(?s)rank 1 of 2 failed.*boom"):
        run_threads(bad, 2, [torch.ones(4)] * 2, timeout=2.0)


def test_pipeline_schedules_and_bubble():
    for p, m in [(2, 4), (4, 8), (4, 1), (3, 5)]:
        for make in (gpipe_schedule, one_f_one_b_schedule):
            sched = make(p, m)
            assert all(sorted((s.op, s.mb) for s in st) ==
                       sorted([("F", i) for i in range(m)] + [("B", i) for i in range(m)])
                       for st in sched)
            for t_b in (1.0, 2.0):
                assert bubble_fraction(simulate(sched, 1.0, t_b)) == pytest.approx(
                    bubble_formula(p, m))
        assert [peak_in_flight(s) for s in gpipe_schedule(p, m)] == [m] * p
        assert [peak_in_flight(s) for s in one_f_one_b_schedule(p, m)] == [
            min(p - s, m) for s in range(p)]
    steps = one_f_one_b_schedule(4, 8)[1]
    assert [f"{s.op}{s.mb}" for s in steps[:6]] == ["F0", "F1", "F2", "B0", "F3", "B1"]
    with pytest.raises(ValueError, match="deadlock"):
        simulate([[gpipe_schedule(2, 1)[0][1], gpipe_schedule(2, 1)[0][0]],
                  gpipe_schedule(2, 1)[1]])


def test_router_aux_loss_capacity():
    logits = torch.tensor([[3.0, 1.0, 0.0, -1.0], [0.0, 2.0, 1.0, 0.0]])
    gates, experts = top_k_route(logits, 2)
    assert experts.tolist() == [[0, 1], [1, 2]]
    torch.testing.assert_close(gates[0], torch.softmax(torch.tensor([3.0, 1.0]), 0))
    uniform = torch.zeros(8, 4)
    assert float(load_balancing_loss(uniform, torch.arange(8).view(8, 1) % 4)) == pytest.approx(1.0)
    assert float(load_balancing_loss(uniform + torch.tensor([9.0, 0, 0, 0]),
                                     torch.zeros(8, 1, dtype=torch.long))) == pytest.approx(4.0, 1e-3)
    assert expert_capacity(16, 4, 2, 1.25) == 10
    keep = capacity_mask(torch.tensor([[0, 1], [0, 2], [0, 1]]), 4, 2)
    assert keep.tolist() == [[True, True], [True, True], [False, True]]


def test_moe_dropless_equals_dense_sum_and_registers_in_config():
    torch.manual_seed(0)
    moe = MoE(8, 16, MoEConfig(n_experts=4, top_k=2, n_shared=1))
    x = torch.randn(3, 5, 8)
    y = moe(x)
    flat = x.reshape(-1, 8)
    gates, experts = top_k_route(moe.router(flat), 2)
    ref = torch.stack([sum(gates[t, j] * moe.experts[int(experts[t, j])](flat[t])
                           for j in range(2)) for t in range(15)]) + moe.shared(flat)
    torch.testing.assert_close(y.reshape(-1, 8), ref, atol=1e-6, rtol=1e-5)
    assert int(moe.expert_load.sum()) == 30 and moe.dropped == 0
    moe.cfg.capacity_factor = 0.5
    moe(x)
    assert moe.dropped > 0
    config = GPTConfig(vocab_size=32, d_model=16, n_layer=2, n_head=2, mlp="moe",
                       mlp_options=dict(n_experts=4, top_k=1))
    with pytest.raises(ValueError, match="llmlab.parallel.LAYER_KINDS"):
        GPT(config)  # MoE is chapter 04's: nn does not know it
    model = GPT(config, kinds=LAYER_KINDS)
    idx = torch.randint(0, 32, (2, 6))
    (model.loss(idx, idx) + 0.01 * moe_aux_loss(model)).backward()
    assert model.blocks[0].mlp.router.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="unknown MoE option"):
        GPT(GPTConfig(mlp="moe", mlp_options=dict(n_expert=4)), kinds=LAYER_KINDS)


def test_ring_attention_merge_equals_full_softmax():
    q, k, v = (torch.randn(1, 2, 4, 8) for _ in range(3))
    k2, v2 = torch.randn(1, 2, 6, 8), torch.randn(1, 2, 6, 8)
    out, lse = merge_step(*partial_attention(q, k, v, False), *partial_attention(q, k2, v2, False))
    ref = torch.softmax(q @ torch.cat([k, k2], 2).transpose(-1, -2) / 8 ** 0.5, -1) @ torch.cat(
        [v, v2], 2)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


def test_zero_formulas_match_paper_example():
    # ZeRO paper figure 1: Ψ = 7.5B, N = 64, K = 12: 120 GB, 31.4 GB, 16.6 GB, 1.88 GB.
    got = [zero_memory(7.5e9, 64, s) / 1e9 for s in range(4)]
    assert got == pytest.approx([120, 31.4, 16.6, 1.88], rel=0.01)


def test_calculator_llama3_70b():
    mem = memory_per_gpu(LLAMA3_70B, Plan(dp=1, zero=0, seq_len=8192))
    assert mem["model_states"] == pytest.approx(16 * 70.6e9)
    plan = Plan(dp=64, tp=8, pp=4, zero=1, n_micro=16, seq_len=8192)
    mem = memory_per_gpu(LLAMA3_70B, plan)
    assert mem["total"] < 80e9
    t = step_time(LLAMA3_70B, plan)
    assert t["bubble"] == pytest.approx(t["compute"] * 3 / 16)
    assert t["total"] > t["compute"]


@pytest.mark.parametrize("shape, gpus, tp, pp, batch, tokens, tflops, days", [
    (("GPT-3 175B", 175e9, 96, 12288, 96), 1024, 8, 8, 1536, 300e9, 140, 34),
    (("1T", 1.008e12, 128, 25600, 160), 3072, 8, 64, 3072, 450e9, 163, 84),
])
def test_calculator_reproduces_megatron_training_times(shape, gpus, tp, pp, batch, tokens, tflops, days):
    """Narayanan et al. (arXiv:2104.04473) section 5.1: with full recomputation (8·P FLOPs per
    token) at the measured per-GPU throughput on A100s, training takes ~34 and ~84 days."""
    dp = gpus // (tp * pp)
    plan = Plan(dp=dp, tp=tp, pp=pp, n_micro=batch // dp, seq_len=2048, recompute="full")
    a100 = Hardware("A100", memory=80e9, peak_flops=312e12, mfu=tflops / 312)
    t = step_time(ModelShape(*shape), plan, a100)
    assert t["tokens"] == batch * 2048
    assert tokens / t["tokens"] * t["compute"] / 86400 == pytest.approx(days, rel=0.03)


def test_buckets_and_mesh():
    ps = [torch.nn.Parameter(torch.zeros(n)) for n in (10, 10, 30, 5)]
    assert [len(b) for b in make_buckets(ps, 80)] == [2, 1, 1]
    assert mesh_ranks(2, 2) == ([[0, 1], [2, 3]], [[0, 2], [1, 3]])


def test_recomputation_saves_activations_and_keeps_gradients():
    idx = torch.randint(0, 64, (2, 16))
    grads, saved = {}, {}
    for policy in (None, "selective", "full"):
        model = tiny_gpt()
        if policy:
            recompute_blocks(model, policy)
        saved[policy] = saved_activation_bytes(lambda m=model: m.loss(idx, idx).backward(),
                                               tuple(model.parameters()))
        grads[policy] = torch.cat([p.grad.reshape(-1) for p in model.parameters()])
    assert saved["full"] < saved["selective"] <= saved[None]
    torch.testing.assert_close(grads["full"], grads[None])
    torch.testing.assert_close(grads["selective"], grads[None])


def _ddp_on_simulated_ranks(world_size: int, micro: int, replay: bool) -> list:
    """llmlab's DDP over RingGroups: every rank from other weights, its slice of each batch in
    ``micro`` micro-batches (all but the last under no_sync), 2 SGD steps."""
    from llmlab.parallel import DDP, RingGroup, run_replay, run_threads

    def rank(net, comm):
        group = RingGroup(comm)
        ddp = DDP(net, bucket_bytes=64, group=group)
        opt = torch.optim.SGD(net.parameters(), lr=0.5)
        g = torch.Generator().manual_seed(0)
        for _ in range(2):
            x = torch.randn(2 * world_size * micro, 4, generator=g)
            mine = x.chunk(world_size)[comm.rank]
            opt.zero_grad()
            for j, part in enumerate(mine.chunk(micro)):
                ctx = ddp.no_sync() if j < micro - 1 else contextlib.nullcontext()
                with ctx:
                    (ddp(part).pow(2).mean() / micro).backward()
            ddp.finish_gradient_sync()
            opt.step()
        return [p.detach().clone() for p in net.parameters()], group.log

    nets = []
    for r in range(world_size):  # different starts: the broadcast must fix them
        torch.manual_seed(10 + r)
        nets.append(torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3)))
    return (run_replay if replay else run_threads)(rank, world_size, nets)[0]


@pytest.mark.parametrize("world_size,micro,replay", [(2, 1, False), (3, 2, False), (2, 2, True)])
def test_ddp_on_ring_groups_equals_one_process(world_size, micro, replay):
    torch.manual_seed(10)
    net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))
    opt = torch.optim.SGD(net.parameters(), lr=0.5)
    g = torch.Generator().manual_seed(0)
    for _ in range(2):  # one process, the whole batch
        x = torch.randn(2 * world_size * micro, 4, generator=g)
        opt.zero_grad()
        net(x).pow(2).mean().backward()
        opt.step()
    for weights, log in _ddp_on_simulated_ranks(world_size, micro, replay):
        for got, want in zip(weights, net.parameters()):
            torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)
        reduces = [n for op, n, _ in log if op == "all_reduce"]
        assert reduces == [8 * 3 + 3, 8 + 4 * 8] * 2  # 2 buckets a step, in backward's order


def test_ring_group_all_reduce_happens_only_when_waited_on():
    from llmlab.parallel import RingGroup, run_threads

    def rank(comm):
        group = RingGroup(comm)
        t, u = torch.full((3,), float(comm.rank + 1)), torch.ones(2)
        group.all_reduce(u)  # never waited on: nothing moves
        handle = group.all_reduce(t)
        before = t.clone()
        handle.wait()
        return before, t, u

    for before, after, untouched in run_threads(rank, 2)[0]:
        assert torch.equal(after, torch.full((3,), 3.0)) and not torch.equal(before, after)
        assert torch.equal(untouched, torch.ones(2))
