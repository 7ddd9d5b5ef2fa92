"""Causal attention: reference vs fused fast path, vs a per-query loop, GQA sharing, masks."""

import math

import pytest
import torch

from llmlab.nn import CausalSelfAttention, causal_attention, causal_mask, fast_causal_attention


def _loop_attention(q, k, v):
    """One query at a time, one head at a time: the definition with no broadcasting."""
    b, h, t_q, d = q.shape
    group = h // k.shape[1]
    offset = k.shape[2] - t_q
    out = torch.zeros_like(q)
    for bi in range(b):
        for hi in range(h):
            for i in range(t_q):
                keys = k[bi, hi // group, : offset + i + 1]
                w = torch.softmax(keys @ q[bi, hi, i] / math.sqrt(d), dim=0)
                out[bi, hi, i] = w @ v[bi, hi // group, : offset + i + 1]
    return out


@pytest.mark.parametrize("n_head,n_kv_head", [(4, 4), (4, 2), (4, 1)])
@pytest.mark.parametrize("t_q,t_k", [(6, 6), (3, 9), (1, 5)])
def test_reference_fast_and_loop_agree(n_head, n_kv_head, t_q, t_k):
    q = torch.randn(2, n_head, t_q, 8)
    k, v = torch.randn(2, n_kv_head, t_k, 8), torch.randn(2, n_kv_head, t_k, 8)
    ref = _loop_attention(q, k, v)
    torch.testing.assert_close(causal_attention(q, k, v), ref, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(fast_causal_attention(q, k, v), ref, atol=1e-5, rtol=1e-4)


def test_explicit_mask_replaces_causal_mask():
    q, k, v = torch.randn(2, 2, 4, 8), torch.randn(2, 2, 4, 8), torch.randn(2, 2, 4, 8)
    mask = causal_mask(4, 4).expand(2, 1, 4, 4).clone()
    mask[0, :, :, 0] = False  # row 0 of the batch may not see token 0 (a left pad)
    mask[0, :, 0, 0] = True  # …except token 0 itself, so no row is empty
    ref = causal_attention(q, k, v, mask)
    torch.testing.assert_close(fast_causal_attention(q, k, v, mask), ref, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(ref[1], causal_attention(q, k, v)[1])
    assert not torch.allclose(ref[0, :, 1:], causal_attention(q, k, v)[0, :, 1:])


def test_shape_errors_are_explained():
    with pytest.raises(ValueError, match="multiple of n_kv_head"):
        causal_attention(torch.randn(1, 3, 2, 4), torch.randn(1, 2, 2, 4), torch.randn(1, 2, 2, 4))
    with pytest.raises(ValueError, match="expects q"):
        fast_causal_attention(torch.randn(3, 2, 4), torch.randn(3, 2, 4), torch.randn(3, 2, 4))
    with pytest.raises(ValueError, match="multiple"):
        CausalSelfAttention(32, 4, 3)


def test_module_is_causal_and_fast_equals_reference():
    torch.manual_seed(0)
    attn = CausalSelfAttention(32, n_head=4, n_kv_head=2)
    x = torch.randn(2, 7, 32)
    y = attn(x)
    x2 = x.clone()
    x2[:, 4:] = torch.randn(2, 3, 32)  # change the future
    torch.testing.assert_close(attn(x2)[:, :4], y[:, :4])
    attn.attend = causal_attention
    torch.testing.assert_close(attn(x), y, atol=1e-5, rtol=1e-4)


def test_gqa_heads_share_keys():
    """With n_kv_head=1 every query head sees the same keys: equal q rows give equal outputs."""
    q = torch.randn(1, 1, 5, 8).expand(1, 4, 5, 8)
    k, v = torch.randn(1, 1, 5, 8), torch.randn(1, 1, 5, 8)
    out = fast_causal_attention(q.contiguous(), k, v)
    for h in range(1, 4):
        torch.testing.assert_close(out[:, h], out[:, 0])
