"""Parity with Hugging Face ``peft`` on tiny random ``transformers`` models (offline).

Same base weights and same adapter weights must give the same logits and the same adapter
gradients, and adapters move both ways: peft -> llmlab (``from_peft_state_dict``) and
llmlab -> peft (``to_peft_state_dict`` + ``peft.set_peft_model_state_dict``).
"""

from __future__ import annotations

import peft as hf_peft
import pytest
import torch
import transformers

from llmlab import peft
from llmlab.model import from_hf
from tests.peft.conftest import randomize

pytestmark = pytest.mark.parity
VOCAB = 97


def hf_llama() -> transformers.LlamaForCausalLM:
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=48,
                                   num_hidden_layers=2, num_attention_heads=4,
                                   num_key_value_heads=2, max_position_embeddings=64)
    return transformers.LlamaForCausalLM(cfg).eval()


def hf_gpt2() -> transformers.GPT2LMHeadModel:
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=4, n_positions=64)
    return transformers.GPT2LMHeadModel(cfg).eval()


def batch() -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.randint(0, VOCAB, (2, 9), generator=torch.Generator().manual_seed(1))
    return x[:, :-1], x[:, 1:]


def ce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten())


def pair(make_hf, hf_config, apply_ours):
    """(peft model with random adapter weights, llmlab model loaded with the same adapter)."""
    hf = make_hf()
    ours = apply_ours(from_hf(hf).eval())
    pm = hf_peft.get_peft_model(hf, hf_config).eval()
    randomize(pm, seed=5)
    peft.from_peft_state_dict(ours, hf_peft.get_peft_model_state_dict(pm))
    return pm, ours


def assert_same_forward_and_grads(pm, ours, module_params, n_virtual=0):
    x, y = batch()
    theirs = pm(input_ids=x).logits[:, n_virtual:]
    mine = ours(x)
    torch.testing.assert_close(mine, theirs, rtol=1e-4, atol=1e-4)
    with pm.disable_adapter(), torch.no_grad():
        base = pm(input_ids=x).logits
    assert (base - theirs.detach()).abs().max() > 1e-2, "the adapter should change the output"
    ce(theirs, y).backward()
    ce(mine, y).backward()
    inner = ours.model if hasattr(ours, "prefix") or hasattr(ours, "n_virtual") else ours
    compared = 0
    for o_name, h_name in peft.hf_module_names(inner.config).items():
        for ours_p, theirs_p in module_params:
            try:
                t = pm.base_model.model.get_submodule(h_name)
            except AttributeError:
                continue
            if not hasattr(t, theirs_p.split(".")[0]) or not getattr(t, theirs_p.split(".")[0]):
                continue
            g_theirs = t.get_parameter(theirs_p).grad
            g_ours = getattr(inner.get_submodule(o_name), ours_p).grad
            torch.testing.assert_close(g_ours.reshape(g_theirs.shape), g_theirs, rtol=1e-4,
                                       atol=1e-5, msg=f"{o_name}.{ours_p}")
            compared += 1
    assert compared or not module_params


LORA_PARAMS = [("lora_A", "lora_A.default.weight"), ("lora_B", "lora_B.default.weight")]
DORA_PARAMS = LORA_PARAMS + [("lora_magnitude", "lora_magnitude_vector.default.weight")]


@pytest.mark.parametrize("rslora", [False, True])
def test_lora_llama(rslora):
    targets = list(peft.ALL_LINEAR)
    pm, ours = pair(hf_llama, hf_peft.LoraConfig(r=4, lora_alpha=8, target_modules=targets,
                                                 use_rslora=rslora),
                    lambda m: peft.apply_lora(m, peft.LoRAConfig(r=4, alpha=8, use_rslora=rslora,
                                                                 target_modules=tuple(targets))))
    assert_same_forward_and_grads(pm, ours, LORA_PARAMS)


def test_dora_llama():
    targets = ["q_proj", "v_proj", "down_proj"]
    pm, ours = pair(hf_llama, hf_peft.LoraConfig(r=4, lora_alpha=8, target_modules=targets,
                                                 use_dora=True),
                    lambda m: peft.apply_lora(m, peft.LoRAConfig(r=4, alpha=8, use_dora=True,
                                                                 target_modules=tuple(targets))))
    assert_same_forward_and_grads(pm, ours, DORA_PARAMS)


def test_lora_gpt2_conv1d():
    pm, ours = pair(hf_gpt2, hf_peft.LoraConfig(r=4, lora_alpha=16, target_modules=["c_proj", "c_fc"],
                                                fan_in_fan_out=True),
                    lambda m: peft.apply_lora(m, peft.LoRAConfig(
                        r=4, alpha=16, target_modules=("o_proj", "mlp.fc", "mlp.proj"))))
    assert_same_forward_and_grads(pm, ours, LORA_PARAMS)


def test_ia3_llama():
    pm, ours = pair(hf_llama, hf_peft.IA3Config(target_modules=["k_proj", "v_proj", "down_proj"],
                                                feedforward_modules=["down_proj"]), peft.apply_ia3)
    assert_same_forward_and_grads(pm, ours, [("ia3_l", "ia3_l.default")])


def test_prefix_tuning_llama():
    pm, ours = pair(hf_llama, hf_peft.PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=3),
                    lambda m: peft.PrefixTuning(m, n_virtual=3))
    assert_same_forward_and_grads(pm, ours, [])
    g = pm.prompt_encoder["default"].embedding.weight.grad  # (P, L*2*H*D)
    L, two, P, H, D = ours.prefix.shape
    torch.testing.assert_close(ours.prefix.grad, g.view(P, L, two, H, D).permute(1, 2, 0, 3, 4),
                               rtol=1e-4, atol=1e-5)


def test_prompt_tuning_llama():
    pm, ours = pair(hf_llama, hf_peft.PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=3),
                    lambda m: peft.PromptTuning(m, n_virtual=3))
    assert_same_forward_and_grads(pm, ours, [], n_virtual=3)
    torch.testing.assert_close(ours.model.tok_emb.prompt.grad,
                               pm.prompt_encoder["default"].embedding.weight.grad,
                               rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("method", ["lora", "dora", "ia3", "prefix", "adalora"])
def test_llmlab_adapters_load_into_peft(method):
    configs = {
        "lora": (hf_peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "o_proj"]),
                 lambda m: peft.apply_lora(m, peft.LoRAConfig(r=4, alpha=8,
                                                              target_modules=("q_proj", "o_proj")))),
        "dora": (hf_peft.LoraConfig(r=4, lora_alpha=8, target_modules=["k_proj"], use_dora=True),
                 lambda m: peft.apply_lora(m, peft.LoRAConfig(r=4, alpha=8, target_modules=("k_proj",),
                                                              use_dora=True))),
        "ia3": (hf_peft.IA3Config(target_modules=["k_proj", "v_proj", "down_proj"],
                                  feedforward_modules=["down_proj"]), peft.apply_ia3),
        "prefix": (hf_peft.PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=3),
                   lambda m: peft.PrefixTuning(m, n_virtual=3)),
        "adalora": adalora_pair(),
    }
    hf_config, apply = configs[method]
    hf = hf_llama()
    ours = apply(from_hf(hf).eval())
    randomize(ours, seed=7)
    pm = hf_peft.get_peft_model(hf, hf_config).eval()
    result = hf_peft.set_peft_model_state_dict(pm, peft.to_peft_state_dict(ours))
    assert set(result.unexpected_keys) <= {"prompt_embeddings"}  # peft loads that one itself
    x, _ = batch()
    with torch.no_grad():
        torch.testing.assert_close(ours(x), pm(input_ids=x).logits, rtol=1e-4, atol=1e-5)
    # and back: the exported file, re-imported, gives the same tensors
    again = apply(from_hf(hf_llama()).eval())
    peft.from_peft_state_dict(again, hf_peft.get_peft_model_state_dict(pm))
    for (n, a), b in zip(peft.adapter_state_dict(ours).items(), peft.adapter_state_dict(again).values()):
        torch.testing.assert_close(a, b, msg=n)


def test_unsupported_exports_raise():
    gpt2 = peft.apply_lora(from_hf(hf_gpt2()), peft.LoRAConfig(target_modules=("q_proj",)))
    with pytest.raises(ValueError, match="no peft counterpart"):
        peft.to_peft_state_dict(gpt2)
    with pytest.raises(ValueError, match="does not name"):
        peft.from_peft_state_dict(peft.apply_lora(from_hf(hf_llama())), {"x.lora_A.weight": torch.zeros(1)})


ADALORA_TARGETS = ["q_proj", "v_proj", "down_proj"]
ADALORA_PARAMS = [(k, f"{k}.default") for k in ("lora_A", "lora_B", "lora_E")]


def adalora_pair():
    return (hf_peft.AdaLoraConfig(init_r=4, target_r=2, lora_alpha=8, target_modules=ADALORA_TARGETS,
                                  total_step=100),
            lambda m: peft.apply_adalora(m, r=4, alpha=8, target_modules=tuple(ADALORA_TARGETS)))


def test_adalora_llama():
    """Same P, λ, Q -> same logits and same gradients of P, λ, Q (peft scales by alpha / (r + 1e-5))."""
    pm, ours = pair(hf_llama, *adalora_pair())
    assert_same_forward_and_grads(pm, ours, ADALORA_PARAMS)


def test_loraplus_groups_match_peft():
    """LoRA+ is an optimizer recipe: B matrices at ratio x the learning rate of A, as peft's
    ``create_loraplus_optimizer`` groups them."""
    from peft.optimizers import create_loraplus_optimizer

    targets = ["q_proj", "v_proj"]
    pm, ours = pair(hf_llama, hf_peft.LoraConfig(r=4, lora_alpha=8, target_modules=targets),
                    lambda m: peft.apply_lora(m, peft.LoRAConfig(r=4, alpha=8,
                                                                 target_modules=tuple(targets))))
    theirs_opt = create_loraplus_optimizer(pm, torch.optim.AdamW, lr=1e-3, loraplus_lr_ratio=16.0)
    ours_opt = torch.optim.AdamW(peft.loraplus_param_groups(ours, lr=1e-3, ratio=16.0))
    lr_theirs = {id(p): g["lr"] for g in theirs_opt.param_groups for p in g["params"]}
    lr_ours = {id(p): g["lr"] for g in ours_opt.param_groups for p in g["params"]}
    assert len(lr_ours) == len(lr_theirs) == 2 * 2 * len(targets)
    for o_name, h_name in peft.hf_module_names(ours.config).items():
        if not o_name.endswith(tuple(targets)):
            continue
        t, m = pm.base_model.model.get_submodule(h_name), ours.get_submodule(o_name)
        for k in ("lora_A", "lora_B"):
            assert lr_ours[id(getattr(m, k))] == lr_theirs[id(getattr(t, k)["default"].weight)], k
    # one optimizer step from the same weights and the same gradients lands on the same weights
    x, y = batch()
    ce(pm(input_ids=x).logits, y).backward()
    ce(ours(x), y).backward()
    theirs_opt.step()
    ours_opt.step()
    for o_name, h_name in peft.hf_module_names(ours.config).items():
        if o_name.endswith(tuple(targets)):
            t, m = pm.base_model.model.get_submodule(h_name), ours.get_submodule(o_name)
            torch.testing.assert_close(m.lora_B, t.lora_B["default"].weight, rtol=1e-4, atol=1e-6)


def test_multi_lora_mixed_batch_matches_peft():
    """One batch, one adapter per row (peft's ``adapter_names=`` forward; "__base__" = none),
    adapters of different ranks and scalings, exported from peft into llmlab's stacked layers."""
    targets = ["q_proj", "v_proj", "up_proj"]
    hf = hf_llama()
    pm = hf_peft.get_peft_model(hf, hf_peft.LoraConfig(r=4, lora_alpha=8, target_modules=targets),
                                adapter_name="a")
    pm.add_adapter("b", hf_peft.LoraConfig(r=2, lora_alpha=8, target_modules=targets))
    randomize(pm, seed=5)  # both adapters' tensors are trainable parameters
    pm.eval()
    adapters, scalings = [], []
    for name, r in (("a", 4), ("b", 2)):
        one = peft.apply_lora(from_hf(hf_llama()).eval(),
                              peft.LoRAConfig(r=r, alpha=8, target_modules=tuple(targets)))
        peft.from_peft_state_dict(one, hf_peft.get_peft_model_state_dict(pm, adapter_name=name))
        adapters.append(peft.adapter_state_dict(one))
        scalings.append(8 / r)
    multi = peft.apply_multi_lora(from_hf(hf_llama()).eval(), adapters, scalings)
    x = torch.randint(0, VOCAB, (4, 8), generator=torch.Generator().manual_seed(2))
    with torch.no_grad(), peft.adapter_ids(multi, torch.tensor([0, 1, -1, 1])):
        mine = multi(x)
        theirs = pm(input_ids=x, adapter_names=["a", "b", "__base__", "b"]).logits
    torch.testing.assert_close(mine, theirs, rtol=1e-4, atol=1e-4)
    assert (mine[0] - mine[1]).abs().max() > 1e-2, "rows with different adapters should differ"


# Methods of chapter 05 without a peft counterpart, so without a parity test here: BitFit,
# bottleneck adapters (peft's "adaption_prompt" is LLaMA-Adapter, a different method) and GaLore
# (an optimizer, not in peft). P-tuning v2 is prefix tuning without the reparameterisation MLP:
# peft's PrefixTuningConfig(prefix_projection=False), covered by test_prefix_tuning_llama. peft's
# AdaLoRA rank pattern (matrices resized after training) has no llmlab counterpart: the adapters
# exchanged here are the full-rank P, λ, Q with the masked λ_i at zero.


@pytest.mark.parametrize("rslora", [False, True])
def test_adapter_directory_loads_in_peft_from_pretrained(tmp_path, rslora):
    """An llmlab model exported with ``to_hf`` plus the adapter directory ``save_peft_adapter``
    writes: ``PeftModel.from_pretrained`` gives the llmlab model's logits; ``load_peft_adapter``
    reads peft's own ``save_pretrained`` output back."""
    from llmlab.model import to_hf
    from tests.peft.conftest import tiny_model

    ours = peft.apply_lora(tiny_model(), peft.LoRAConfig(
        r=4, alpha=8, target_modules=(r"blocks\.1\..*", "q_proj"), use_rslora=rslora))
    randomize(ours, seed=11)
    peft.save_peft_adapter(ours, tmp_path / "a", r=4, alpha=8, use_rslora=rslora)
    sd, cfg = to_hf(tiny_model())
    hf = transformers.AutoModelForCausalLM.from_config(cfg).eval()
    hf.load_state_dict(sd, strict=False)
    pm = hf_peft.PeftModel.from_pretrained(hf, tmp_path / "a").eval()
    wrapped = {n for n, m in pm.named_modules() if isinstance(m, hf_peft.tuners.lora.LoraLayer)}
    assert len(wrapped) == 1 + 7, wrapped  # q_proj of block 0, every linear of block 1
    x, _ = batch()
    with torch.no_grad():
        torch.testing.assert_close(pm(input_ids=x).logits, ours(x), rtol=1e-4, atol=1e-5)
    pm.save_pretrained(tmp_path / "b")
    again = peft.apply_lora(tiny_model(), peft.LoRAConfig(
        r=4, alpha=8, target_modules=(r"blocks\.1\..*", "q_proj"), use_rslora=rslora))
    assert peft.load_peft_adapter(again, tmp_path / "b")["r"] == 4
    with torch.no_grad():
        torch.testing.assert_close(again(x), ours(x), rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="LoRA adapters only"):
        peft.save_peft_adapter(peft.apply_ia3(tiny_model()), tmp_path / "c", r=4, alpha=8)
