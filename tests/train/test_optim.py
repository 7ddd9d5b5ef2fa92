"""AdamW, the schedule and clipping against torch and transformers."""

import copy
import math

import pytest
import torch

from llmlab.train import (
    AdamW,
    adamw_step,
    adamw_step_foreach,
    clip_grad_norm,
    cosine_lr,
    decay_groups,
)


def _params(seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(4, 3, generator=g, requires_grad=True),
            torch.randn(3, generator=g, requires_grad=True)]


def _grads(step):
    g = torch.Generator().manual_seed(100 + step)
    return [torch.randn(4, 3, generator=g), torch.randn(3, generator=g)]


@pytest.mark.parametrize("wd,betas", [(0.0, (0.9, 0.999)), (0.1, (0.9, 0.95))])
def test_adamw_matches_torch_over_steps_and_groups(wd, betas):
    ours, ref = _params(), _params()
    opt = AdamW([{"params": ours[:1]}, {"params": ours[1:], "weight_decay": 0.0}],
                lr=1e-2, betas=betas, weight_decay=wd)
    topt = torch.optim.AdamW([{"params": ref[:1]}, {"params": ref[1:], "weight_decay": 0.0}],
                             lr=1e-2, betas=betas, weight_decay=wd)
    for step in range(6):
        for p, q, g in zip(ours, ref, _grads(step)):
            p.grad, q.grad = g.clone(), g.clone()
        if step == 3:  # change lr mid-run, as the schedule does
            for o in (opt, topt):
                o.param_groups[0]["lr"] = 3e-3
        opt.step()
        topt.step()
        for p, q in zip(ours, ref):
            torch.testing.assert_close(p, q, atol=1e-7, rtol=1e-6)


def test_adamw_state_dict_round_trip_continues_identically():
    a, b = _params(), _params()
    opt_a = AdamW(a, lr=1e-2)
    for step in range(2):
        for p, g in zip(a, _grads(step)):
            p.grad = g
        opt_a.step()
    with torch.no_grad():
        for p, q in zip(b, a):
            p.copy_(q)
    opt_b = AdamW(b, lr=1e-2)
    opt_b.load_state_dict(copy.deepcopy(opt_a.state_dict()))  # as if read from disk
    for p, q, g in zip(a, b, _grads(5)):
        p.grad, q.grad = g.clone(), g.clone()
    opt_a.step()
    opt_b.step()
    for p, q in zip(a, b):
        assert torch.equal(p, q)


def test_adamw_step_first_step_is_sign_times_lr():
    """At t=1 with no decay, m̂ = g and v̂ = g², so the update is lr·g/(|g|+ε) ≈ lr·sign(g)."""
    p = torch.zeros(5)
    g = torch.tensor([3.0, -0.5, 1e-3, -7.0, 2.0])
    adamw_step(p, g, torch.zeros(5), torch.zeros(5), 1, lr=0.1, weight_decay=0.0, eps=1e-12)
    torch.testing.assert_close(p, -0.1 * torch.sign(g))
    with pytest.raises(ValueError, match="step"):
        adamw_step(p, g, torch.zeros(5), torch.zeros(5), 0, lr=0.1)


def test_decay_groups_split_matrices_from_vectors():
    from llmlab.model import GPT, GPTConfig

    m = GPT(GPTConfig(vocab_size=50, d_model=16, n_head=2, n_layer=1))
    decay, no_decay = decay_groups(m, 0.1)
    assert all(p.dim() == 2 for p in decay["params"])
    assert all(p.dim() == 1 for p in no_decay["params"]) and no_decay["weight_decay"] == 0
    n = sum(p.numel() for g in (decay, no_decay) for p in g["params"])
    assert n == m.num_params()  # the tied embedding is counted once


@pytest.mark.parity
@pytest.mark.parametrize("min_ratio", [0.0, 0.1])
def test_schedule_matches_transformers(min_ratio):
    tr = pytest.importorskip("transformers")
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    if min_ratio == 0:
        sched = tr.get_cosine_schedule_with_warmup(opt, 10, 50)
    else:
        sched = tr.get_cosine_with_min_lr_schedule_with_warmup(opt, 10, 50, min_lr_rate=min_ratio)
    for step in range(50):
        assert cosine_lr(step, 1.0, 10, 50, min_ratio) == pytest.approx(sched.get_last_lr()[0])
        opt.step()
        sched.step()


def test_schedule_shape_and_errors():
    assert cosine_lr(0, 1.0, 10, 100) == 0
    assert cosine_lr(10, 1.0, 10, 100) == 1.0
    assert cosine_lr(55, 1.0, 10, 100, 0.1) == pytest.approx(0.55)  # halfway: mean of max, min
    assert cosine_lr(100, 1.0, 10, 100, 0.1) == 0.1 == cosine_lr(500, 1.0, 10, 100, 0.1)
    assert cosine_lr(0, 1.0, 0, 100) == 1.0
    with pytest.raises(ValueError):
        cosine_lr(0, 1.0, 20, 10)


@pytest.mark.parametrize("max_norm", [0.5, 1e6])
def test_clip_matches_torch(max_norm):
    a, b = _params(), _params()
    for p, q, g in zip(a, b, _grads(0)):
        p.grad, q.grad = g * 3, g * 3
    ours = clip_grad_norm(a, max_norm)
    ref = torch.nn.utils.clip_grad_norm_(b, max_norm)
    torch.testing.assert_close(ours, ref)
    for p, q in zip(a, b):
        torch.testing.assert_close(p.grad, q.grad)
    total = math.sqrt(sum(float(p.grad.pow(2).sum()) for p in a))
    assert total == pytest.approx(min(max_norm, float(ref)), rel=1e-5)


def test_foreach_step_equals_the_per_tensor_step():
    ps, gs = _params(), _grads(0)
    ms, vs = [torch.randn_like(p) * 0.1 for p in ps], [torch.rand_like(p) for p in ps]
    ref = [t.detach().clone() for t in ps + ms + vs]
    with torch.no_grad():
        adamw_step_foreach([p.detach() for p in ps], gs, ms, vs, 3, 1e-2, (0.9, 0.95), 1e-8, 0.1)
        for i in range(2):
            adamw_step(ref[i], gs[i], ref[2 + i], ref[4 + i], 3, 1e-2, (0.9, 0.95), 1e-8, 0.1)
    for got, want in zip(ps + ms + vs, ref):
        torch.testing.assert_close(got.detach(), want, atol=1e-7, rtol=1e-6)


def test_a_step_function_plugged_in_runs_in_place_of_the_arithmetic():
    def out_of_place(p, grad, m, v, step, lr, betas, eps, weight_decay):
        p, m, v = p.clone(), m.clone(), v.clone()
        adamw_step(p, grad, m, v, step, lr, betas, eps, weight_decay)
        return p, m, v

    calls = []

    def counted(*args):
        calls.append(args[4])
        return out_of_place(*args)

    ours, plugged = _params(), _params()
    opt_a = AdamW(decay_groups_of(ours), lr=1e-2, betas=(0.9, 0.95))
    opt_b = AdamW(decay_groups_of(plugged), lr=1e-2, betas=(0.9, 0.95), step_fn=counted)
    for step in range(3):
        for params, opt in ((ours, opt_a), (plugged, opt_b)):
            for p, g in zip(params, _grads(step)):
                p.grad = g.clone()
            opt.step()
    assert calls == [1, 1, 2, 2, 3, 3]  # every tensor, with its step count
    for p, q in zip(ours, plugged):
        torch.testing.assert_close(p, q, atol=1e-7, rtol=1e-6)
    assert set(opt_b.state[plugged[0]]) == {"step", "exp_avg", "exp_avg_sq"}


def decay_groups_of(params):
    return [{"params": params[:1], "weight_decay": 0.1}, {"params": params[1:], "weight_decay": 0.0}]
