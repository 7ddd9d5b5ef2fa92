"""The preference and GRPO losses equal trl's on the same log-probabilities.

trl computes these inside trainers; the tests instantiate the trainers on a tiny random model
(offline) and feed them the same per-token log-probabilities through a stand-in forward."""

from __future__ import annotations

import copy
from types import SimpleNamespace

import pytest
import torch
import trl
from datasets import Dataset
from trl.experimental.cpo import CPOTrainer
from trl.experimental.orpo import ORPOTrainer

from llmlab.align import (
    dpo_loss,
    grpo_loss,
    ipo_loss,
    kl_estimate,
    kto_loss,
    kto_reference_point,
    orpo_odds_ratio_term,
    simpo_loss,
)

B, T = 4, 9


def _per_token(seed: int, mask: torch.Tensor) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return -torch.rand(mask.shape, generator=g) * 3 * mask


@pytest.fixture(scope="module")
def dpo_trainer(hf_model, hf_tok, tmp_path_factory):
    ds = Dataset.from_dict({"prompt": ["def f(x):"] * 2, "chosen": [" return x"] * 2,
                            "rejected": [" pass"] * 2})
    args = trl.DPOConfig(output_dir=str(tmp_path_factory.mktemp("dpo")), report_to=[], use_cpu=True,
                         save_strategy="no")
    tr = trl.DPOTrainer(model=hf_model, ref_model=copy.deepcopy(hf_model), args=args, train_dataset=ds,
                        processing_class=hf_tok)
    tr.precompute_ref_logps = True
    return tr


@pytest.fixture(scope="module")
def pref_batch():
    g = torch.Generator().manual_seed(0)
    completion_mask = torch.zeros(2 * B, T, dtype=torch.long)
    for i in range(2 * B):  # prompt of 3 tokens, completions of different lengths
        completion_mask[i, 3:3 + int(torch.randint(2, T - 3, (1,), generator=g))] = 1
    shift = completion_mask[:, 1:].float()
    policy = _per_token(1, shift)
    ref = _per_token(2, shift)
    return completion_mask, policy, ref


def _trl_dpo(trainer, completion_mask, policy, ref, loss_type, beta, label_smoothing=0.0):
    trainer.loss_types, trainer.loss_weights = [loss_type], [1.0]
    trainer.beta, trainer.label_smoothing = beta, label_smoothing
    zeros = torch.zeros_like(policy)
    trainer.model.eval()
    fake = lambda **kw: SimpleNamespace(log_probs=policy, entropy=zeros, mean_logits=zeros,
                                        is_top1=zeros.bool(), aux_loss=None)
    ref_seq = ref.sum(1)
    inputs = {"input_ids": torch.zeros(2 * B, T, dtype=torch.long), "attention_mask": torch.ones(2 * B, T),
              "completion_mask": completion_mask, "ref_chosen_logps": ref_seq[:B],
              "ref_rejected_logps": ref_seq[B:]}
    return trainer._compute_loss(fake, inputs, return_outputs=False)


@pytest.mark.parity
@pytest.mark.parametrize("beta", [0.1, 0.5])
def test_dpo_matches_trl(dpo_trainer, pref_batch, beta):
    mask, policy, ref = pref_batch
    p, r = policy.sum(1), ref.sum(1)
    ours, rc, rr = dpo_loss(p[:B], p[B:], r[:B], r[B:], beta)
    torch.testing.assert_close(ours.mean(), _trl_dpo(dpo_trainer, mask, policy, ref, "sigmoid", beta))
    torch.testing.assert_close(rc, beta * (p[:B] - r[:B]))
    robust, _, _ = dpo_loss(p[:B], p[B:], r[:B], r[B:], beta, label_smoothing=0.2, loss_type="robust")
    torch.testing.assert_close(robust.mean(), _trl_dpo(dpo_trainer, mask, policy, ref, "robust", beta, 0.2))
    lengths = mask.sum(1).float()
    ipo = ipo_loss(p[:B], p[B:], r[:B], r[B:], lengths[:B], lengths[B:], tau=beta)
    torch.testing.assert_close(ipo.mean(), _trl_dpo(dpo_trainer, mask, policy, ref, "ipo", beta))


def _cpo_self(loss_type, beta, label_smoothing=0.0, gamma=0.5):
    return SimpleNamespace(loss_type=loss_type, beta=beta, label_smoothing=label_smoothing, alpha=0.0,
                           simpo_gamma=gamma, accelerator=SimpleNamespace(device=torch.device("cpu")))


@pytest.mark.parity
def test_cdpo_simpo_orpo_match_trl():
    g = torch.Generator().manual_seed(3)
    pc, pr, rc, rr = (-torch.rand(6, generator=g) * 20 for _ in range(4))
    # cDPO = the label-smoothed sigmoid loss on the DPO log-ratios (trl's CPO sigmoid loss computes it
    # on whatever log-prob differences it is given)
    want, _, _ = CPOTrainer.cpo_loss(_cpo_self("sigmoid", 0.3, 0.1), pc - rc, pr - rr)
    ours, _, _ = dpo_loss(pc, pr, rc, rr, beta=0.3, label_smoothing=0.1)
    torch.testing.assert_close(ours, want)
    avg_c, avg_r = pc / 10, pr / 10
    want, _, _ = CPOTrainer.cpo_loss(_cpo_self("simpo", 2.0, 0.0, 0.7), avg_c, avg_r)
    torch.testing.assert_close(simpo_loss(avg_c, avg_r, beta=2.0, gamma=0.7), want)
    want = ORPOTrainer.odds_ratio_loss(_cpo_self("sigmoid", 0.1), avg_c, avg_r)[0]
    torch.testing.assert_close(orpo_odds_ratio_term(avg_c, avg_r, lam=0.1), want)


@pytest.mark.parity
def test_kto_matches_trl(hf_model, hf_tok, tmp_path):
    ds = Dataset.from_dict({"prompt": ["a", "b"], "completion": [" x", " y"], "label": [True, False]})
    args = trl.KTOConfig(output_dir=str(tmp_path), report_to=[], use_cpu=True, save_strategy="no")
    tr = trl.KTOTrainer(model=hf_model, ref_model=copy.deepcopy(hf_model), args=args, train_dataset=ds,
                        processing_class=hf_tok)
    tr.precompute_ref_logps, tr.beta = True, 0.3
    tr.desirable_weight, tr.undesirable_weight = 1.0, 1.5
    n = 6
    labels = torch.tensor([True, False, True, True, False, False])
    mask = torch.ones(n, T - 1)
    policy, kl_policy = _per_token(5, mask), _per_token(6, mask)
    ref_seq, ref_kl = _per_token(7, mask).sum(1), _per_token(8, mask).sum(1) - 3.0
    calls = iter([kl_policy, policy])
    zeros = torch.zeros_like(policy)
    fake = lambda **kw: SimpleNamespace(log_probs=next(calls), entropy=zeros, mean_logits=zeros,
                                        is_top1=zeros.bool(), aux_loss=None)
    tr.model.eval()
    inputs = {"input_ids": torch.zeros(n, T, dtype=torch.long), "attention_mask": torch.ones(n, T),
              "completion_mask": torch.ones(n, T), "KL_input_ids": torch.zeros(n, T, dtype=torch.long),
              "KL_attention_mask": torch.ones(n, T), "KL_completion_mask": torch.ones(n, T),
              "label": labels, "ref_logps": ref_seq, "ref_KL_logps": ref_kl}
    want = tr._compute_loss(fake, inputs, return_outputs=False)
    z0 = kto_reference_point(kl_policy.sum(1), ref_kl)
    assert z0 > 0  # the clamp is not what makes the test pass
    ours = kto_loss(policy.sum(1), ref_seq, labels, z0, beta=0.3, undesirable_weight=1.5)
    torch.testing.assert_close(ours.mean(), want.detach())


@pytest.fixture(scope="module")
def grpo_trainer(hf_model, hf_tok, tmp_path_factory):
    ds = Dataset.from_dict({"prompt": ["def f(x):"] * 4})
    args = trl.GRPOConfig(output_dir=str(tmp_path_factory.mktemp("grpo")), report_to=[], use_cpu=True,
                          per_device_train_batch_size=4, num_generations=4, max_completion_length=T,
                          save_strategy="no")
    return trl.GRPOTrainer(model=hf_model, reward_funcs=lambda completions, **kw: [0.0] * len(completions),
                           args=args, train_dataset=ds, processing_class=hf_tok)


@pytest.mark.parity
@pytest.mark.parametrize("loss_type", ["grpo", "bnpo", "dr_grpo", "dapo"])
@pytest.mark.parametrize("beta,correction", [(0.0, False), (0.04, False), (0.04, True)])
def test_grpo_loss_matches_trl(grpo_trainer, loss_type, beta, correction):
    g = torch.Generator().manual_seed(4)
    n = 8
    mask = torch.zeros(n, T)
    for i in range(n):
        mask[i, : int(torch.randint(2, T + 1, (1,), generator=g))] = 1
    lp = _per_token(10, mask)
    old = lp + 0.3 * torch.randn(n, T, generator=g) * mask  # off-policy: some ratios get clipped
    ref = lp + 0.5 * torch.randn(n, T, generator=g) * mask
    adv = torch.randn(n, generator=g)
    tr = grpo_trainer
    tr.loss_type, tr.beta, tr.epsilon_low, tr.epsilon_high = loss_type, beta, 0.2, 0.28
    tr.args.use_bias_correction_kl = correction
    tr.model.eval()
    tr._get_per_token_logps_and_entropies = lambda *a, **k: (lp, torch.zeros_like(lp), None)
    inputs = {"prompt_ids": torch.zeros(n, 3, dtype=torch.long), "prompt_mask": torch.ones(n, 3),
              "completion_ids": torch.zeros(n, T, dtype=torch.long), "completion_mask": mask,
              "advantages": adv, "old_per_token_logps": old, "ref_per_token_logps": ref,
              "num_items_in_batch": mask.sum()}
    want = tr._compute_loss(tr.model, inputs)
    ours, stats = grpo_loss(lp, old, adv, mask, loss_type, beta, ref, 0.2, 0.28, T,
                            kl_ratio_correction=correction)
    torch.testing.assert_close(ours, want)
    assert 0 < stats["clipfrac"] < 1


def test_kl_estimators():
    """k1 and k3 are unbiased for KL(p || q) when sampling from p; k3 >= 0 everywhere."""
    g = torch.Generator().manual_seed(0)
    p = torch.softmax(torch.randn(20, generator=g), 0)
    q = torch.softmax(torch.randn(20, generator=g), 0)
    exact = float((p * (p / q).log()).sum())
    x = torch.multinomial(p, 200_000, replacement=True, generator=g)
    lp, lq = p.log()[x], q.log()[x]
    for kind in ("k1", "k3"):
        assert abs(float(kl_estimate(lp, lq, kind).mean()) - exact) < 0.02 * max(exact, 1)
    assert float(kl_estimate(lp, lq, "k3").min()) >= 0
    assert kl_estimate(lp, lq, "k1").std() > kl_estimate(lp, lq, "k3").std()  # k3: lower variance
    with pytest.raises(ValueError, match="k1"):
        kl_estimate(lp, lq, "k4")
