import pytest
import torch

from llmlab.attention import (
    flash_attention,
    flash_attention_forward,
    flash_decode,
    merge_partials,
    naive_attention,
    online_logsumexp,
    online_softmax,
    peak_memory,
)
from tests.attention.conftest import assert_same, grads


@pytest.mark.parametrize("block", [1, 3, 7, 64])
def test_online_softmax_equals_softmax(block):
    x = torch.randn(3, 5, 29, dtype=torch.float64) * 20
    x[0, 0, :10] = float("-inf")  # masked entries at the start of a row
    assert_same(online_softmax(x, block), torch.softmax(x, -1))
    m, l = online_logsumexp(x, block)
    assert_same(m + l.log(), torch.logsumexp(x, -1))


def test_online_softmax_survives_large_logits():
    x = torch.tensor([[1000.0, 1001.0, 999.0, -1000.0]])  # exp overflows without the running max
    assert torch.isfinite(online_softmax(x, 1)).all()
    assert_same(online_softmax(x, 1), torch.softmax(x, -1), atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("seq_q,seq_k,bq,bk", [(37, 37, 8, 16), (13, 50, 4, 8), (64, 64, 64, 64),
                                               (1, 33, 16, 5)])
def test_flash_equals_naive_forward_and_grads(qkv, causal, seq_q, seq_k, bq, bk):
    q, k, v = qkv(seq_q=seq_q, seq_k=seq_k, d_v=8)
    out = flash_attention(q, k, v, causal=causal, block_q=bq, block_k=bk)
    ref = naive_attention(q, k, v, causal=causal)
    assert_same(out, ref)
    assert_same(grads(out, (q, k, v)), grads(ref, (q, k, v)))


def test_flash_returns_logsumexp_of_the_scores(qkv):
    q, k, v = qkv(seq_q=20)
    _, lse = flash_attention_forward(q, k, v, causal=True, block_q=8, block_k=8)
    scores = torch.einsum("bhqd,bhkd->bhqk", q, k) / 4.0
    scores = scores.masked_fill(~torch.ones(20, 20, dtype=torch.bool).tril(), float("-inf"))
    assert_same(lse, torch.logsumexp(scores, -1))


def test_flash_saves_no_score_matrix(qkv):
    q, k, v = qkv(seq_q=48)
    out = flash_attention(q, k, v, causal=True, block_q=16, block_k=16)
    saved = out.grad_fn.saved_tensors
    assert all(t.numel() <= q.numel() for t in saved), [tuple(t.shape) for t in saved]
    assert any(t.shape == q.shape[:-1] for t in saved)  # the log-sum-exp, one number per row


def test_flash_bf16_close_to_fp32():
    q, k, v = (torch.randn(1, 2, 40, 32) for _ in range(3))
    out = flash_attention(q.bfloat16(), k.bfloat16(), v.bfloat16(), causal=True, block_q=16,
                          block_k=16)
    assert out.dtype == torch.bfloat16
    assert_same(out.float(), naive_attention(q, k, v, causal=True), atol=3e-2, rtol=3e-2)


def test_flash_peak_memory_is_linear_in_seq():
    seq = 1024
    q, k, v = (torch.randn(1, 4, seq, 32) for _ in range(3))
    _, naive_bytes = peak_memory(lambda: naive_attention(q, k, v, causal=True))
    _, flash_bytes = peak_memory(lambda: flash_attention(q, k, v, True, None, 128, 128))
    assert naive_bytes >= 4 * seq * seq * 4  # holds a (heads, seq, seq) fp32 score matrix
    assert flash_bytes * 10 <= naive_bytes


def test_flash_rejects_bad_shapes():
    with pytest.raises(ValueError, match="heads"):
        kv = torch.randn(1, 2, 8, 16)
        flash_attention(torch.randn(1, 4, 8, 16), kv, kv)
    with pytest.raises(ValueError, match="t_q <= t_k|seq_q <= seq_k"):
        flash_attention(torch.randn(1, 2, 9, 16), kv[:, :2, :4], kv[:, :2, :4], causal=True)
    with pytest.raises(ValueError, match="4-d"):
        flash_attention(torch.randn(4, 8, 16), torch.randn(4, 8, 16), torch.randn(4, 8, 16))


@pytest.mark.parametrize("n_splits", [1, 3, 8])
def test_flash_decode_equals_naive(qkv, n_splits):
    q, k, v = qkv(seq_q=1, seq_k=45)
    assert_same(flash_decode(q, k, v, n_splits), naive_attention(q, k, v))


def test_merge_partials_of_two_halves():
    scores = torch.randn(2, 10, dtype=torch.float64)
    values = torch.randn(10, 3, dtype=torch.float64)
    parts = [(torch.softmax(s, -1) @ vals, torch.logsumexp(s, -1))
             for s, vals in ((scores[:, :4], values[:4]), (scores[:, 4:], values[4:]))]
    merged = merge_partials(torch.stack([p[0] for p in parts]), torch.stack([p[1] for p in parts]))
    assert_same(merged, torch.softmax(scores, -1) @ values)


def test_flash_bf16_scores_are_fp32_in_forward_and_backward():
    """bf16 inputs: the forward's log-sum-exp is that of fp32 scores (the very scores the backward
    recomputes), so gradients match the fp32 reference run on the same bf16 values."""
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 2, 40, 16, generator=g).to(torch.bfloat16) for _ in range(3))
    _, lse = flash_attention_forward(q, k, v, causal=True, block_q=16, block_k=16)
    s = (q.float() @ k.float().transpose(-1, -2)) / 4.0
    s = s.masked_fill(~torch.ones(40, 40, dtype=torch.bool).tril(), float("-inf"))
    torch.testing.assert_close(lse, torch.logsumexp(s, -1), atol=1e-5, rtol=1e-5)
    qb, kb, vb = (t.clone().requires_grad_() for t in (q, k, v))
    flash_attention(qb, kb, vb, causal=True, block_q=16, block_k=16).float().sum().backward()
    q32, k32, v32 = (t.float().requires_grad_() for t in (q, k, v))
    naive_attention(q32, k32, v32, causal=True).sum().backward()
    for a, b in ((qb, q32), (kb, k32), (vb, v32)):
        torch.testing.assert_close(a.grad.float(), b.grad, atol=2e-2, rtol=2e-2)
