"""QLoRA: LoRA on a base frozen in NF4 (llmlab.quant.nf4): forward, gradients, memory, merging."""

from __future__ import annotations

import pytest
import torch

from llmlab import peft
from llmlab.nn import Linear
from llmlab.quant import to_nf4
from tests.peft.conftest import ids, randomize, tiny_model


def test_nf4_linear_is_the_dequantized_matmul():
    torch.manual_seed(0)
    lin = Linear(64, 32)
    q = peft.NF4Linear(lin)
    x = torch.randn(3, 64)
    w = to_nf4(lin.weight.detach()).dequantize()
    torch.testing.assert_close(q(x), x @ w.T + lin.bias, rtol=1e-5, atol=1e-5)
    # within half the widest code gap (1.0 - 0.72) times the block absmax, plus the int8 scale error
    assert (q.weight - lin.weight).abs().max() <= 0.2 * lin.weight.abs().max()
    assert not list(q.parameters())  # nothing of the base trains


def test_qlora_trains_only_adapters_through_frozen_nf4():
    model = tiny_model("llama", d_model=64, d_ff=128)
    x = ids(seq=12)
    ref = model(x).detach()
    peft.apply_qlora(model, peft.LoRAConfig(r=4, target_modules=peft.ALL_LINEAR))
    out = model(x)
    # the 4-bit base changes the logits a little, not a lot
    assert (out - ref).pow(2).mean().sqrt() < 0.2 * ref.std()
    assert all(n.endswith(("lora_A", "lora_B")) for n, p in model.named_parameters() if p.requires_grad)
    nf4 = [m for m in model.modules() if isinstance(m, peft.NF4Linear)]
    assert len(nf4) == 7 * 2
    bits = 8 * sum(m.nbytes() for m in nf4) / sum(m.nf4.shape.numel() for m in nf4)
    assert 4.0 < bits < 4.6  # 4 bits + double-quantized scales (+ tiny layers' padding)
    randomize(model)
    loss = model.loss(x[:, :-1], x[:, 1:])
    loss.backward()
    first = model.blocks[0].attn.q_proj
    assert first.lora_A.grad.abs().sum() > 0  # gradients pass through later NF4 layers
    with pytest.raises(ValueError, match="merge_qlora"):
        peft.merge(model)
    adapted = model(x).detach()
    peft.merge_qlora(model)
    assert not any(isinstance(m, (peft.LoRALinear, peft.NF4Linear)) for n, m in model.named_modules()
                   if n.endswith("q_proj"))
    torch.testing.assert_close(model(x), adapted, rtol=1e-4, atol=1e-4)
