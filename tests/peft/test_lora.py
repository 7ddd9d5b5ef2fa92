"""LoRA, rsLoRA, LoRA+, DoRA: forward against the dense definition, merge/unmerge, targets, I/O."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from llmlab import peft
from llmlab.nn import Linear
from tests.peft.conftest import ids, randomize, tiny_model


def test_lora_forward_equals_dense_update():
    g = torch.Generator().manual_seed(0)
    x, W, b = torch.randn(3, 5, 16, generator=g), torch.randn(8, 16, generator=g), torch.randn(8)
    A, B = torch.randn(4, 16, generator=g), torch.randn(8, 4, generator=g)
    dense = x @ (W + 0.5 * B @ A).T + b
    torch.testing.assert_close(peft.lora_forward(x, W, b, A, B, 0.5), dense, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("base_cls", [Linear, nn.Linear])
def test_lora_linear_starts_as_base_and_merges_exactly(base_cls):
    torch.manual_seed(0)
    base = base_cls(16, 8)
    x = torch.randn(4, 16)
    ref = base(x).detach()
    layer = peft.LoRALinear(base, r=4, alpha=8)
    torch.testing.assert_close(layer(x), ref)  # B = 0: the adapted layer is the base layer
    with torch.no_grad():
        layer.lora_B.normal_()
    w0 = base.weight.detach().clone()
    adapted = layer(x).detach()
    torch.testing.assert_close(adapted, peft.lora_forward(x, w0, base.bias, layer.lora_A,
                                                          layer.lora_B, 2.0))
    layer.merge()
    torch.testing.assert_close(layer(x), adapted, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(base(x), adapted, rtol=1e-5, atol=1e-5)
    layer.unmerge()
    torch.testing.assert_close(base.weight, w0, rtol=1e-6, atol=1e-6)


def test_scalings_and_config_errors():
    assert peft.lora_scaling(16, 32) == 2.0
    assert peft.lora_scaling(16, 32, use_rslora=True) == 8.0
    assert peft.LoRAConfig(r=4, alpha=8, use_rslora=True).scaling == 4.0
    with pytest.raises(ValueError, match="rank"):
        peft.LoRAConfig(r=0)
    with pytest.raises(ValueError, match="dropout"):
        peft.LoRAConfig(dropout=1.0)
    with pytest.raises(ValueError, match="no module"):
        peft.apply_lora(tiny_model(), peft.LoRAConfig(target_modules=("qproj",)))


def test_apply_lora_targets_freezes_and_counts(model):
    names = ("q_proj", "v_proj") if model.config.mlp == "swiglu" else ("q_proj", r".*mlp\.fc")
    peft.apply_lora(model, peft.LoRAConfig(r=4, target_modules=names))
    wrapped = [n for n, m in model.named_modules() if isinstance(m, peft.LoRALinear)]
    assert len(wrapped) == 2 * model.config.n_layer
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.endswith(("lora_A", "lora_B")) for n in trainable)
    # r (in + out) per layer: llama q 32->32, v 32->16 (2 KV heads); gpt2 q 32->32, fc 32->128
    per_layer = 4 * (64 + 48) if model.config.mlp == "swiglu" else 4 * (64 + 160)
    assert peft.count_trainable(model)[0] == 2 * per_layer


def test_model_merge_unmerge_and_unload(model):
    x = ids()
    ref = model(x).detach()
    peft.apply_lora(model, peft.LoRAConfig(r=4, target_modules=("q_proj", "k_proj", "o_proj")))
    randomize(model)
    adapted = model(x).detach()
    assert (adapted - ref).abs().max() > 1e-3
    peft.merge(model)
    torch.testing.assert_close(model(x), adapted, rtol=1e-4, atol=1e-4)
    peft.unmerge(model)
    torch.testing.assert_close(model(x), adapted, rtol=1e-4, atol=1e-4)
    peft.merge_and_unload(model)
    assert not any(isinstance(m, peft.LoRALinear) for m in model.modules())
    assert "blocks.0.attn.q_proj.weight" in model.state_dict()
    torch.testing.assert_close(model(x), adapted, rtol=1e-4, atol=1e-4)


def test_gradients_reach_only_the_adapter():
    model = peft.apply_lora(tiny_model(), peft.LoRAConfig(r=2, target_modules=("v_proj",)))
    x = ids()
    model.loss(x[:, :-1], x[:, 1:]).backward()
    layer = model.blocks[0].attn.v_proj
    assert layer.lora_A.grad is not None and layer.base.weight.grad is None
    assert layer.lora_A.grad.abs().sum() == 0  # B = 0 at init: dL/dA = B^T (...) = 0
    assert layer.lora_B.grad.abs().sum() > 0


def test_dropout_only_in_training():
    torch.manual_seed(0)
    layer = peft.LoRALinear(Linear(16, 8), r=4, dropout=0.5)
    with torch.no_grad():
        layer.lora_B.normal_()
    x = torch.randn(32, 16)
    layer.eval()
    torch.testing.assert_close(layer(x), layer(x))
    layer.train()
    assert not torch.allclose(layer(x), layer(x))


def test_loraplus_groups():
    model = peft.apply_lora(tiny_model(), peft.LoRAConfig(r=2))
    slow, fast = peft.loraplus_param_groups(model, lr=1e-3, ratio=16)
    assert fast["lr"] == pytest.approx(1.6e-2) and slow["lr"] == 1e-3
    assert {id(p) for p in fast["params"]} == {id(m.lora_B) for m in model.modules()
                                               if isinstance(m, peft.LoRALinear)}
    with pytest.raises(ValueError, match="no LoRA B"):
        peft.loraplus_param_groups(peft.apply_bitfit(tiny_model()), lr=1e-3)


def test_save_and_load_adapter_only(tmp_path):
    cfg = peft.LoRAConfig(r=4, target_modules=("q_proj", "down_proj"))
    model = peft.apply_lora(tiny_model(), cfg)
    randomize(model)
    path = peft.save_adapter(model, tmp_path / "adapter.safetensors", {"r": 4})
    # the file holds the adapter, not the model
    assert path.stat().st_size < 0.2 * sum(p.numel() * 4 for p in model.parameters())
    fresh = peft.apply_lora(tiny_model(), cfg)
    assert peft.load_adapter(fresh, path) == {"r": 4}
    torch.testing.assert_close(fresh(ids()), model(ids()))
    with pytest.raises(ValueError, match="missing"):
        peft.load_adapter(peft.apply_lora(tiny_model(), peft.LoRAConfig(r=4)), path)


def test_dora_matches_definition_and_merges():
    torch.manual_seed(0)
    base = Linear(16, 8)
    x = torch.randn(5, 16)
    ref = base(x).detach()
    layer = peft.DoRALinear(base, r=4, alpha=8)
    torch.testing.assert_close(layer.lora_magnitude, base.weight.norm(dim=1))
    torch.testing.assert_close(layer(x), ref, rtol=1e-5, atol=1e-5)  # W' = W at init
    with torch.no_grad():
        layer.lora_B.normal_()
        layer.lora_magnitude.mul_(torch.linspace(0.5, 1.5, 8))
    w = base.weight.detach().clone()
    out = layer(x)
    # the paper's equation 5 with the per-row (output) norm
    adapted = w + 2.0 * layer.lora_B @ layer.lora_A
    dense = x @ (layer.lora_magnitude[:, None] * adapted / adapted.norm(dim=1, keepdim=True)).T
    torch.testing.assert_close(out, dense + base.bias, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(out, peft.dora_forward(x, w, base.bias, layer.lora_A, layer.lora_B,
                                                      layer.lora_magnitude, 2.0))
    layer.merge()
    torch.testing.assert_close(base(x), out.detach(), rtol=1e-4, atol=1e-4)
    layer.unmerge()
    torch.testing.assert_close(base.weight, w, rtol=1e-5, atol=1e-5)


def test_dora_norm_is_detached():
    torch.manual_seed(0)
    layer = peft.DoRALinear(Linear(6, 4, bias=False), r=2)
    with torch.no_grad():
        layer.lora_B.normal_()
    x = torch.randn(3, 6)
    layer(x).sum().backward()
    got = layer.lora_A.grad.clone()
    # the same gradient with the norm held constant by hand
    A = layer.lora_A.detach().clone().requires_grad_(True)
    w = layer.base.weight
    adapted = w + layer.scaling * layer.lora_B.detach() @ A
    norm = (w + layer.scaling * layer.lora_B @ layer.lora_A).norm(dim=1).detach()
    ((layer.lora_magnitude.detach() / norm) * (x @ adapted.T)).sum().backward()
    torch.testing.assert_close(got, A.grad)
    assert math.isfinite(float(got.abs().sum())) and float(got.abs().sum()) > 0
