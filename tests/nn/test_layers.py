"""Linear, Embedding, LayerNorm, RMSNorm and the MLPs against torch and transformers."""

import pytest
import torch
import torch.nn.functional as F

from llmlab.nn import (
    Embedding,
    GeluMLP,
    LayerNorm,
    Linear,
    RMSNorm,
    SwiGLU,
    gelu_tanh,
    layer_norm,
    rms_norm,
    swiglu,
)


def test_linear_matches_matmul_and_rejects_wrong_width():
    lin = Linear(5, 3)
    x = torch.randn(2, 4, 5)
    torch.testing.assert_close(lin(x), x @ lin.weight.T + lin.bias)
    assert Linear(5, 3, bias=False).bias is None
    with pytest.raises(ValueError, match=r"\(\.\.\., 5\)"):
        lin(torch.randn(2, 4))


def test_embedding_is_one_hot_matmul_and_checks_ids():
    emb = Embedding(10, 4)
    idx = torch.tensor([[1, 9, 0], [3, 3, 2]])
    torch.testing.assert_close(emb(idx), F.one_hot(idx, 10).float() @ emb.weight)
    with pytest.raises(ValueError, match="ids must be in"):
        emb(torch.tensor([10]))
    with pytest.raises(ValueError, match="integer"):
        emb(torch.tensor([1.0]))


def test_layer_norm_definition_matches_torch_module():
    x = torch.randn(3, 7, 16) * 3 + 2
    ln = LayerNorm(16)
    with torch.no_grad():
        ln.weight.normal_()
        ln.bias.normal_()
    ref = torch.nn.functional.layer_norm(x, (16,), ln.weight, ln.bias, 1e-5)
    torch.testing.assert_close(layer_norm(x, ln.weight, ln.bias), ref)
    torch.testing.assert_close(ln(x), ref)
    with pytest.raises(ValueError):
        ln(torch.randn(2, 8))


def test_rms_norm_matches_torch_and_keeps_dtype():
    x = torch.randn(4, 9, 32) * 5
    w = torch.randn(32)
    torch.testing.assert_close(rms_norm(x, w, 1e-6), F.rms_norm(x, (32,), w, 1e-6))
    xb = x.bfloat16()
    out = rms_norm(xb, w.bfloat16())
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), F.rms_norm(x, (32,), w, 1e-6), atol=0.1, rtol=0.02)


@pytest.mark.parity
def test_rms_norm_module_matches_transformers_llama_rmsnorm():
    llama = pytest.importorskip("transformers.models.llama.modeling_llama")
    ref = llama.LlamaRMSNorm(24, eps=1e-5)
    ours = RMSNorm(24, eps=1e-5)
    with torch.no_grad():
        ref.weight.normal_()
        ours.weight.copy_(ref.weight)
    x = torch.randn(2, 5, 24)
    torch.testing.assert_close(ours(x), ref(x), atol=1e-6, rtol=1e-5)


def test_swiglu_module_matches_its_definition():
    mlp = SwiGLU(16, 40)
    x = torch.randn(2, 3, 16)
    ref = swiglu(x, mlp.gate_proj.weight, mlp.up_proj.weight, mlp.down_proj.weight)
    torch.testing.assert_close(mlp(x), ref)
    # gate and up are not interchangeable: silu is applied to the gate only
    swapped = swiglu(x, mlp.up_proj.weight, mlp.gate_proj.weight, mlp.down_proj.weight)
    assert not torch.allclose(mlp(x), swapped)


def test_gelu_mlp_matches_definition():
    mlp = GeluMLP(8, 32)
    x = torch.randn(5, 8)
    ref = gelu_tanh(x @ mlp.fc.weight.T + mlp.fc.bias) @ mlp.proj.weight.T + mlp.proj.bias
    torch.testing.assert_close(mlp(x), ref)
