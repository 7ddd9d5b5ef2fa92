import pytest
import torch

from llmlab.attention import NativeSparseAttention, naive_attention, repeat_kv
from llmlab.nn import StepContext
from tests.attention.conftest import assert_same


def _nsa(**kw):
    torch.manual_seed(0)
    args = dict(d_model=32, n_head=4, n_kv_head=2, block_len=4, stride=2, select_block=4,
                n_select=2, n_local=1, window=6)
    return NativeSparseAttention(**{**args, **kw}).double()


def _qkv(nsa, x):
    b, s, _ = x.shape
    q = nsa.q_proj(x).view(b, s, 4, 8).transpose(1, 2)
    kv = nsa.kv_proj(x).view(b, s, 6, 2, 8).permute(2, 0, 3, 1, 4)
    return q, kv


def test_nsa_is_causal():
    nsa = _nsa()
    x = torch.randn(2, 20, 32, dtype=torch.float64)
    y = nsa(x)
    x2 = x.clone()
    x2[:, 13:] += torch.randn(2, 7, 32, dtype=torch.float64)
    assert_same(nsa(x2)[:, :13], y[:, :13])
    assert not torch.allclose(nsa(x2)[:, 13:], y[:, 13:])


def test_selecting_every_block_is_full_causal_attention():
    nsa = _nsa(n_select=100)
    x = torch.randn(1, 18, 32, dtype=torch.float64)
    q, kv = _qkv(nsa, x)
    _, p_cmp = nsa.compressed_branch(q, kv[0], kv[1])
    out = nsa.selected_branch(q, kv[2], kv[3], p_cmp)
    assert_same(out, naive_attention(q, repeat_kv(kv[2], 2), repeat_kv(kv[3], 2), causal=True))


def test_long_window_is_full_causal_attention():
    nsa = _nsa(window=50)
    x = torch.randn(1, 18, 32, dtype=torch.float64)
    q, kv = _qkv(nsa, x)
    assert_same(nsa.window_branch(q, kv[4], kv[5]),
                naive_attention(q, repeat_kv(kv[4], 2), repeat_kv(kv[5], 2), causal=True))


def test_compression_sees_only_finished_blocks():
    nsa = _nsa()
    k = torch.randn(1, 2, 10, 8, dtype=torch.float64)
    k_cmp, _, ends = nsa.compress(k, k)
    assert ends.tolist() == [3, 5, 7, 9]  # blocks [0,4), [2,6), [4,8), [6,10)
    expected = nsa.cmp_k((k[:, :, 2:6] + nsa.cmp_pos).flatten(-2))
    assert_same(k_cmp[:, :, 1], expected)
    q = torch.randn(1, 4, 10, 8, dtype=torch.float64)
    _, p = nsa.compressed_branch(q, k, k)
    assert (p[..., :3, :] == 0).all()  # no block has ended before position 3
    assert (p[..., 5, 2:] == 0).all()
    torch.testing.assert_close(p[..., 5, :2].sum(-1), torch.ones(1, 4, dtype=p.dtype))


def test_selection_picks_the_highest_scoring_block_per_group():
    nsa = _nsa(n_select=3, n_local=1)
    seq, n_cmp = 16, 7  # 4 selection blocks of 4 tokens
    p_cmp = torch.zeros(1, 4, seq, n_cmp, dtype=torch.float64)
    p_cmp[:, 0:2, :, 2] = 1.0  # group 0's heads: compressed block 2 = tokens [4, 8) -> block 1
    p_cmp[:, 2:4, :, 5] = 1.0  # group 1's heads: tokens [10, 14) -> blocks 2 and 3
    chosen = nsa.select_blocks(p_cmp, seq)  # (1, 2, seq, 4)
    # the last query: first block and its own (local) block are forced, plus the best other one
    assert chosen[0, 0, 15].tolist() == [True, True, False, True]
    assert chosen[0, 1, 15].tolist() == [True, False, True, True]
    assert not chosen[0, :, 3, 1:].any()  # no future blocks


def test_gates_and_all_branches_get_gradients():
    nsa = _nsa()
    x = torch.randn(2, 16, 32, dtype=torch.float64, requires_grad=True)
    nsa(x).pow(2).sum().backward()
    for name, p in nsa.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_nsa_bad_arguments():
    with pytest.raises(ValueError):
        _nsa(stride=8)  # stride > block_len
    x = torch.randn(1, 4, 32, dtype=torch.float64)
    with pytest.raises(ValueError, match="cache"):
        _nsa()(x, StepContext(torch.arange(4)[None], cache=object()))
    with pytest.raises(ValueError, match="mask"):
        _nsa()(x, StepContext(torch.arange(4)[None], torch.ones(1, 1, 4, 4, dtype=torch.bool)))
