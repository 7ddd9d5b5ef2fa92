"""PPO's pieces: GAE against its closed form, the loss terms against trl's PPO trainer formulas
(trl 1.x no longer ships a PPO trainer; the reference lines below are transcribed from
trl 0.11's ``PPOv2Trainer.train`` and ``core.masked_whiten``/``AdaptiveKLController``), and a
short PPO run on the book model whose reward rises."""

from __future__ import annotations

import copy

import torch

from llmlab.align import (
    AdaptiveKLController,
    PPOConfig,
    PPOTrainer,
    gae,
    kl_penalized_rewards,
    masked_mean,
    masked_whiten,
    ppo_policy_loss,
    ppo_value_loss,
    return_statement_reward,
    text_reward,
)


def _batch(seed=0, b=4, c=7):
    g = torch.Generator().manual_seed(seed)
    mask = torch.zeros(b, c)
    for i in range(b):
        mask[i, : int(torch.randint(2, c + 1, (1,), generator=g))] = 1
    return g, mask


def test_gae_matches_closed_form():
    g, mask = _batch()
    r, v = torch.randn(4, 7, generator=g), torch.randn(4, 7, generator=g)
    gamma, lam = 0.9, 0.8
    adv, ret = gae(r, v, mask, gamma, lam)
    for i in range(4):
        n = int(mask[i].sum())
        vi = torch.cat([v[i, :n], torch.zeros(1)])
        delta = r[i, :n] + gamma * vi[1:] - vi[:-1]  # episode ends after the last real token
        for t in range(n):
            want = sum((gamma * lam) ** k * delta[t + k] for k in range(n - t))
            torch.testing.assert_close(adv[i, t], want)
        assert adv[i, n:].abs().sum() == 0
    torch.testing.assert_close(ret, adv + v * mask)
    # lambda = 1, gamma = 1: advantage = reward-to-go minus value (Monte-Carlo)
    adv1, _ = gae(r, v, mask, 1.0, 1.0)
    rtg = (r * mask).flip(1).cumsum(1).flip(1)
    torch.testing.assert_close(adv1, (rtg - v) * mask)


def test_policy_and_value_losses_match_trl_formulas():
    g, mask = _batch(1)
    lp, old = torch.randn(4, 7, generator=g) * 0.3 - 2, torch.randn(4, 7, generator=g) * 0.3 - 2
    adv, cliprange = torch.randn(4, 7, generator=g), 0.2
    # trl 0.11 PPOv2Trainer: pg_losses = -mb_advantage * ratio; pg_losses2 = -A * clamp(ratio, ...)
    ratio = torch.exp(lp - old)
    pg_losses, pg_losses2 = -adv * ratio, -adv * torch.clamp(ratio, 1.0 - cliprange, 1.0 + cliprange)
    pg_loss_max = torch.max(pg_losses, pg_losses2)
    want = pg_loss_max[mask.bool()].mean()
    got, clipfrac = ppo_policy_loss(lp, old, adv, mask, cliprange)
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(clipfrac, (pg_losses2 > pg_losses).float()[mask.bool()].mean())
    assert 0 < clipfrac < 1
    v, old_v, ret = (torch.randn(4, 7, generator=g) for _ in range(3))
    # trl: vpredclipped = clamp(vpred, old - c, old + c); vf_loss = 0.5 * masked_mean(max(l1, l2))
    vclip = torch.clamp(v, old_v - cliprange, old_v + cliprange)
    want = 0.5 * torch.max((v - ret) ** 2, (vclip - ret) ** 2)[mask.bool()].mean()
    torch.testing.assert_close(ppo_value_loss(v, old_v, ret, mask, cliprange)[0], want)


def test_whiten_and_kl_rewards_and_controller():
    g, mask = _batch(2)
    x = torch.randn(4, 7, generator=g) * 3 + 1
    # trl core.masked_whiten: mean, var = masked_mean, masked_var(unbiased); (x - mean) * rsqrt(var + 1e-8)
    m = mask.bool()
    want = (x - x[m].mean()) * torch.rsqrt(x[m].var() + 1e-8)
    torch.testing.assert_close(masked_whiten(x, mask)[m], want[m])
    lp, ref = torch.randn(4, 7, generator=g), torch.randn(4, 7, generator=g)
    score = torch.randn(4, generator=g)
    r = kl_penalized_rewards(score, lp, ref, mask, 0.1)
    last = mask.sum(1).long() - 1
    for i in range(4):
        exp = -0.1 * (lp[i] - ref[i]) * mask[i]
        exp[last[i]] += score[i]
        torch.testing.assert_close(r[i], exp)
    # trl AdaptiveKLController: error = clip(current / target - 1, -0.2, 0.2); mult = 1 + error * n / horizon
    ctl = AdaptiveKLController(0.2, target=6.0, horizon=10000)
    assert abs(ctl.update(12.0, 256) - 0.2 * (1 + 0.2 * 256 / 10000)) < 1e-12
    assert abs(ctl.update(6.0 * 0.9, 256) - 0.2 * (1 + 0.2 * 256 / 10000) * (1 - 0.1 * 256 / 10000)) < 1e-12
    torch.testing.assert_close(masked_mean(x, mask), x[m].mean())


def test_ppo_run_raises_reward(book):
    """A short PPO run on the book model: the verifiable reward rises (fixed seed, with a margin)."""
    torch.manual_seed(0)
    model, tok = copy.deepcopy(book[0]), book[1]
    eos = tok.special_ids["<|endoftext|>"]
    prompts = ["def get(self):\n        ", "def size(x):\n    ", "def name(self):\n        ",
               "def value(self):\n        "]
    ids = torch.tensor([tok.encode(p)[-6:] for p in prompts]).repeat(4, 1)
    reward = text_reward(return_statement_reward, tok)
    tr = PPOTrainer(model, PPOConfig(max_new_tokens=8, lr=3e-4, init_kl_coef=0.02), eos_token_id=eos)
    scores = [tr.step(ids, reward)["score"] for _ in range(12)]
    assert sum(scores[-3:]) / 3 > sum(scores[:3]) / 3 + 0.1, scores
