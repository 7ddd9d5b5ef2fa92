"""IA3, BitFit, bottleneck adapters, prompt and prefix tuning, multi-LoRA, GaLore, the calculator."""

from __future__ import annotations

import pytest
import torch

from llmlab import peft
from llmlab.model import generate
from tests.peft.conftest import ids, randomize, tiny_model


def test_ia3_scales_and_merges(model):
    x = ids()
    ref = model(x).detach()
    ff = "down_proj" if model.config.mlp == "swiglu" else "proj"
    peft.apply_ia3(model, ("k_proj", "v_proj", ff), (ff,))
    torch.testing.assert_close(model(x), ref)  # l = 1 at init
    randomize(model)
    layer = model.blocks[0].mlp.get_submodule(ff)
    assert layer.feedforward and layer.ia3_l.shape == (layer.base.weight.shape[1],)
    v = model.blocks[0].attn.v_proj
    h = torch.randn(3, model.config.d_model)
    torch.testing.assert_close(v(h), v.base(h) * v.ia3_l)
    adapted = model(x).detach()
    peft.merge(model)
    torch.testing.assert_close(model(x), adapted, rtol=1e-4, atol=1e-4)
    peft.unmerge(model)
    torch.testing.assert_close(model(x), adapted, rtol=1e-4, atol=1e-4)


def test_bitfit_trains_only_biases(model):
    x = ids()
    ref = model(x).detach()
    peft.apply_bitfit(model)
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    assert names and all(n.endswith("bias") for n in names)
    torch.testing.assert_close(model(x), ref)  # added biases are zero
    assert peft.count_trainable(model)[0] == peft.trainable_params(model.config, "bitfit")


def test_adapters_start_as_identity_and_train(model):
    x = ids()
    ref = model(x).detach()
    peft.apply_adapters(model, bottleneck=4)
    torch.testing.assert_close(model(x), ref)
    assert peft.count_trainable(model)[0] == peft.trainable_params(model.config, "adapters",
                                                                   bottleneck=4)
    model.loss(x[:, :-1], x[:, 1:]).backward()
    assert model.blocks[0].mlp.adapter.up.weight.grad.abs().sum() > 0


def test_prompt_tuning_from_tokens_equals_prepending_them(model):
    x, prompt = ids(), torch.tensor([5, 17, 3])
    ref = model(torch.cat([prompt.expand(2, 3), x], 1))[:, 3:].detach()
    tuned = peft.PromptTuning(model, n_virtual=3, init_ids=prompt)
    torch.testing.assert_close(tuned(x), ref, rtol=1e-5, atol=1e-5)
    assert [n for n, p in tuned.named_parameters() if p.requires_grad] == ["model.tok_emb.prompt"]
    # the virtual tokens go through the model's KV cache like any token
    out = generate(tuned.model, torch.cat([tuned.virtual_ids(2, x.device), x], 1), max_new_tokens=4)
    assert out.shape == (2, 3 + 7 + 4)


def test_prefix_tuning_from_tokens_equals_prepending_them():
    model = tiny_model("llama")
    x, prefix_ids = ids(), torch.tensor([5, 17, 3, 40])
    ref = model(torch.cat([prefix_ids.expand(2, 4), x], 1))[:, 4:].detach()
    tuned = peft.PrefixTuning(model, n_virtual=4, init_ids=prefix_ids)
    assert tuned.prefix.shape == (2, 2, 4, 2, 8)  # (n_layer, k/v, P, n_kv_head, d_head)
    torch.testing.assert_close(tuned(x), ref, rtol=1e-5, atol=1e-5)
    tuned.loss(x[:, :-1], x[:, 1:]).backward()
    assert tuned.prefix.grad is not None and tuned.prefix.grad.abs().sum() > 0
    # decoding keeps the prefix in the cache: the same tokens as decoding after the real prefix
    full = generate(model, torch.cat([prefix_ids.expand(2, 4), x], 1), max_new_tokens=5)
    assert torch.equal(tuned.generate(x, max_new_tokens=5), full[:, 4:])


def test_prefix_projection_and_errors():
    tuned = peft.PrefixTuning(tiny_model("llama"), n_virtual=3, projection_dim=16)
    assert tuned.prefix_kv().shape == (2, 2, 3, 2, 8)
    assert tuned(ids()).shape == (2, 7, 97)
    with pytest.raises(ValueError, match="n_virtual"):
        peft.PrefixTuning(tiny_model(), n_virtual=0)
    with pytest.raises(ValueError, match="prefix must be"):
        peft.prefill_cache(torch.zeros(2, 3, 4), batch=1)


def _lora_model(targets, r, seed):
    m = peft.apply_lora(tiny_model("llama"), peft.LoRAConfig(r=r, alpha=2 * r,
                                                             target_modules=targets))
    randomize(m, seed=seed)
    return m


def test_multi_lora_batch_equals_each_adapter_alone():
    x = ids(batch=4)
    a = _lora_model(("q_proj", "v_proj"), 2, seed=1)
    b = _lora_model(("v_proj", "down_proj"), 4, seed=2)
    base = tiny_model("llama")
    multi = peft.apply_multi_lora(tiny_model("llama"), [peft.adapter_state_dict(a),
                                                        peft.adapter_state_dict(b)], [2.0, 2.0])
    rows = torch.tensor([1, -1, 0, 1])
    with peft.adapter_ids(multi, rows):
        got = multi(x)
    alone = {0: a(x), 1: b(x), -1: base(x)}
    for i, k in enumerate(rows.tolist()):
        torch.testing.assert_close(got[i], alone[k][i], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(multi(x), base(x))  # no ids: the base model
    with pytest.raises(ValueError, match="ids must be"):
        with peft.adapter_ids(multi, torch.tensor([0])):
            multi(x)


def test_galore_step_with_identity_projection_is_adam():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(6, 10, generator=g)
    ref = torch.nn.Parameter(w.clone())
    adam = torch.optim.Adam([ref], lr=1e-2)
    ours, m, v = w.clone(), torch.zeros(6, 10), torch.zeros(6, 10)
    for t in range(1, 4):
        grad = torch.randn(6, 10, generator=g)
        ref.grad = grad.clone()
        adam.step()
        peft.galore_adam_step(ours, grad, torch.eye(6), m, v, t, lr=1e-2)
    torch.testing.assert_close(ours, ref.detach(), rtol=1e-5, atol=1e-6)


def test_galore_update_is_low_rank_and_state_small():
    torch.manual_seed(0)
    for shape in ((8, 20), (20, 8)):
        w = torch.nn.Parameter(torch.randn(shape))
        bias = torch.nn.Parameter(torch.randn(shape[0]))
        opt = peft.GaLoreAdamW([{"params": [w], "rank": 2, "update_gap": 10, "scale": 1.0},
                                {"params": [bias]}], lr=1e-2)
        before = w.detach().clone()
        w.grad, bias.grad = torch.randn(shape), torch.randn(shape[0])
        opt.step()
        delta = w.detach() - before
        sv = torch.linalg.svdvals(delta)
        assert sv[1] > 0.1 * sv[0] and sv[2] < 1e-3 * sv[0]  # rank 2, up to fp32 rounding
        P = opt.state[w]["P"]
        proj = P @ P.T @ delta if shape[0] <= shape[1] else delta @ P @ P.T
        torch.testing.assert_close(proj, delta, rtol=1e-4, atol=1e-5)
        assert opt.state_numbers() == peft.galore_state_numbers(*shape, 2) + 2 * shape[0]


def test_galore_plain_group_is_adamw():
    torch.manual_seed(0)
    a, b = torch.nn.Parameter(torch.randn(5)), torch.nn.Parameter(torch.randn(5))
    b.data.copy_(a.data)
    ours = peft.GaLoreAdamW([a], lr=1e-2, weight_decay=0.1)
    ref = torch.optim.AdamW([b], lr=1e-2, weight_decay=0.1)
    for _ in range(3):
        grad = torch.randn(5)
        a.grad, b.grad = grad.clone(), grad.clone()
        ours.step()
        ref.step()
    torch.testing.assert_close(a, b)


def test_calculator_counts_match_adapted_models():
    c = tiny_model("llama").config
    cases = {
        "lora": lambda m: peft.apply_lora(m, peft.LoRAConfig(r=4, target_modules=peft.ALL_LINEAR)),
        "dora": lambda m: peft.apply_lora(m, peft.LoRAConfig(r=4, target_modules=peft.ALL_LINEAR,
                                                             use_dora=True)),
        "ia3": peft.apply_ia3,
        "prompt": lambda m: peft.PromptTuning(m, n_virtual=5),
        "prefix": lambda m: peft.PrefixTuning(m, n_virtual=5),
    }
    for method, apply in cases.items():
        got = peft.count_trainable(apply(tiny_model("llama")))[0]
        assert got == peft.trainable_params(c, method, r=4, n_virtual=5), method
    assert peft.trainable_params(c, "full") == tiny_model("llama").num_params()


def test_calculator_on_real_configs():
    llama = peft.REAL_CONFIGS["Llama-3-8B"]
    assert peft.trainable_params(llama, "full") == 8_030_261_248  # the published count
    # LoRA r=8 on q and v of Llama-3-8B: 32 layers x 8 x ((4096+4096) + (4096+1024))
    assert peft.trainable_params(llama, "lora", r=8, targets=("q_proj", "v_proj")) == 3_407_872
    full = peft.finetune_memory(llama, "full")
    lora = peft.finetune_memory(llama, "lora")
    qlora = peft.finetune_memory(llama, "qlora")
    assert full["optimizer"] == 12 * full["trainable"]
    assert qlora["weights"] < lora["weights"] < full["weights"] + full["optimizer"]
    assert peft.finetune_memory(llama, "galore")["optimizer"] < full["optimizer"]
    with pytest.raises(ValueError, match="unknown method"):
        peft.trainable_params(llama, "lorra")


def test_adalora_budget_schedule_and_masking():
    assert peft.budget_schedule(0, 48, 16, 100, 10, 20) == 48
    assert peft.budget_schedule(85, 48, 16, 100, 10, 20) == 16
    assert peft.budget_schedule(45, 48, 16, 100, 10, 20) == 16 + int(32 * 0.5 ** 3)
    model = peft.apply_adalora(tiny_model("llama"), r=4, alpha=8)
    randomize(model)
    alloc = peft.RankAllocator(model, target_rank=2, total_steps=10, warmup=0, final=2)
    x = ids()
    for step in range(1, 10):
        model.zero_grad()
        loss = model.loss(x[:, :-1], x[:, 1:]) + 0.1 * peft.orthogonal_regularization(model)
        loss.backward()
        budget = alloc.step(step)
        kept = sum(alloc.ranks().values())
        assert kept <= budget
        if step == 9:
            assert kept == budget == 8  # 4 layers x target rank 2
    # what survives is what scores highest, across layers
    with torch.no_grad():
        for m in alloc.layers.values():
            m.lora_E.fill_(1.0)
    names = list(alloc.layers)
    scores = {n: torch.tensor([0.1, 5.0, 0.2, 0.3]) if i == 0 else torch.tensor([1.0, 2.0, 3.0, 4.0])
              for i, n in enumerate(names)}
    alloc.mask(scores, budget=7)  # keeps 5.0 and the 2.0, 3.0, 4.0 of the other three layers
    assert alloc.ranks() == {n: 1 if i == 0 else 2 for i, n in enumerate(names)}
    assert alloc.layers[names[0]].lora_E[1] == 1.0


def test_adalora_importance_is_smoothed_sensitivity_times_uncertainty():
    model = peft.apply_adalora(tiny_model("llama"), r=2, target_modules=("q_proj",))
    alloc = peft.RankAllocator(model, target_rank=1, total_steps=10, beta1=0.5, beta2=0.5)
    p = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
    p.grad = torch.tensor([3.0, 1.0])
    s1 = alloc.score(p)  # I = [3, 2]; Ī = [1.5, 1]; Ū = 0.5 |I - Ī| = [0.75, 0.5]
    torch.testing.assert_close(s1, torch.tensor([1.125, 0.5]))
    with pytest.raises(ValueError, match="SVDLinear"):
        peft.RankAllocator(tiny_model(), target_rank=1, total_steps=10)
