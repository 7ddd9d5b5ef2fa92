import pytest
import torch

from llmlab.attention import CausalSelfAttention, grouped_attention, naive_attention, repeat_kv
from llmlab.nn import causal_attention, fast_causal_attention
from tests.attention.conftest import assert_same, grads


def test_repeat_kv_groups_are_contiguous():
    x = torch.arange(2 * 3 * 1 * 1.0).view(2, 3, 1, 1)
    out = repeat_kv(x, 2)
    assert out.shape == (2, 6, 1, 1)
    assert out[0, :, 0, 0].tolist() == [0, 0, 1, 1, 2, 2]  # head h uses kv head h // 2


@pytest.mark.parametrize("kv_heads", [1, 2, 4])
def test_grouped_attention_equals_expanded(qkv, kv_heads):
    q, k, v = qkv(heads=4, kv_heads=kv_heads, seq_q=9, seq_k=21)
    out = grouped_attention(q, k, v, causal=True)
    expanded = naive_attention(q, repeat_kv(k, 4 // kv_heads), repeat_kv(v, 4 // kv_heads),
                               causal=True)
    assert_same(out, expanded)
    assert_same(grads(out, (q, k, v)), grads(expanded, (q, k, v)))
    # llmlab.nn's reference (softmax in fp32) and its fused SDPA path
    assert_same(out, causal_attention(q, k, v), atol=1e-6, rtol=1e-5)
    assert_same(out.float(), fast_causal_attention(q.float(), k.float(), v.float()),
                atol=1e-5, rtol=1e-4)


def test_grouped_attention_with_mask(qkv):
    q, k, v = qkv(heads=6, kv_heads=2, seq_q=10)
    mask = torch.rand(2, 1, 10, 10, generator=torch.Generator().manual_seed(3)) > 0.5
    mask |= torch.eye(10, dtype=torch.bool)
    assert_same(grouped_attention(q, k, v, mask=mask),
                naive_attention(q, repeat_kv(k, 3), repeat_kv(v, 3), mask=mask))


def _module(n_head, n_kv_head, seed=0):
    torch.manual_seed(seed)
    return CausalSelfAttention(32, n_head, n_kv_head).double()


def test_mha_is_gqa_with_all_kv_heads():
    attn = _module(4, 4)
    x = torch.randn(2, 7, 32, dtype=torch.float64)
    b, t, h, d = 2, 7, 4, 8
    q = attn.q_proj(x).view(b, t, h, d).transpose(1, 2)
    k = attn.k_proj(x).view(b, t, h, d).transpose(1, 2)
    v = attn.v_proj(x).view(b, t, h, d).transpose(1, 2)
    ref = naive_attention(q, k, v, causal=True).transpose(1, 2).reshape(b, t, h * d)
    assert_same(attn(x), attn.o_proj(ref))


@pytest.mark.parametrize("n_kv_head", [1, 2])
def test_gqa_module_equals_mha_with_repeated_kv_weights(n_kv_head):
    """GQA/MQA = MHA whose K and V projections copy each KV head to its group."""
    gqa = _module(4, n_kv_head)
    mha = _module(4, 4, seed=1)
    rep = 4 // n_kv_head
    with torch.no_grad():
        for name in ("q_proj", "o_proj"):
            getattr(mha, name).weight.copy_(getattr(gqa, name).weight)
        for name in ("k_proj", "v_proj"):
            w = getattr(gqa, name).weight.view(n_kv_head, 8, 32)
            getattr(mha, name).weight.copy_(w.repeat_interleave(rep, 0).reshape(32, 32))
    x = torch.randn(2, 7, 32, dtype=torch.float64, requires_grad=True)
    y_gqa, y_mha = gqa(x), mha(x)
    assert_same(y_gqa, y_mha)
    assert_same(grads(y_gqa, x), grads(y_mha, x))


def test_gqa_rejects_bad_head_counts():
    with pytest.raises(ValueError):
        CausalSelfAttention(32, 4, 3)
    with pytest.raises(ValueError):
        grouped_attention(torch.randn(1, 4, 5, 8), torch.randn(1, 3, 5, 8), torch.randn(1, 3, 5, 8))
    with pytest.raises(ValueError):
        repeat_kv(torch.randn(3, 5, 8), 2)
