import pytest
import torch

from llmlab.attention import (
    elu_feature_map,
    linear_attention_chunked,
    linear_attention_parallel,
    linear_attention_recurrent,
)
from tests.attention.conftest import assert_same, grads


@pytest.mark.parametrize("chunk", [1, 5, 16, 64])
def test_parallel_recurrent_chunked_agree(qkv, chunk):
    q, k, v = qkv(seq_q=23, d=8, d_v=6)
    par = linear_attention_parallel(q, k, v)
    rec = linear_attention_recurrent(q, k, v)
    chk = linear_attention_chunked(q, k, v, chunk=chunk)
    assert_same(par, rec)
    assert_same(par, chk)
    g_par = grads(par, (q, k, v))
    assert_same(g_par, grads(rec, (q, k, v)))
    assert_same(g_par, grads(chk, (q, k, v)))


def test_parallel_matches_the_definition(qkv):
    q, k, v = qkv(batch=1, heads=1, seq_q=6, d=4)
    fq, fk = elu_feature_map(q)[0, 0], elu_feature_map(k)[0, 0]
    t = 4  # o_t = sum_j<=t sim(q_t, k_j) v_j / sum_j<=t sim(q_t, k_j)
    sims = torch.stack([fq[t] @ fk[j] for j in range(t + 1)])
    expected = (sims[:, None] * v[0, 0, : t + 1]).sum(0) / sims.sum()
    assert_same(linear_attention_parallel(q, k, v)[0, 0, t], expected, atol=1e-6, rtol=1e-6)


def test_noncausal_uses_every_key(qkv):
    q, k, v = qkv(seq_q=10)
    fq, fk = elu_feature_map(q), elu_feature_map(k)
    a = fq @ fk.transpose(-1, -2)
    expected = (a @ v) / (a.sum(-1, keepdim=True) + 1e-6)
    assert_same(linear_attention_parallel(q, k, v, causal=False), expected)


def test_recurrent_state_is_constant_size(qkv):
    """Output t depends only on tokens <= t: truncating the input leaves it unchanged."""
    q, k, v = qkv(seq_q=12)
    full = linear_attention_recurrent(q, k, v)
    assert_same(full[..., :5, :], linear_attention_recurrent(q[..., :5, :], k[..., :5, :],
                                                             v[..., :5, :]))


def test_chunked_rejects_bad_chunk(qkv):
    with pytest.raises(ValueError, match="chunk"):
        linear_attention_chunked(*qkv(), chunk=0)
