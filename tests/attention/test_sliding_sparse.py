import pytest
import torch

from llmlab.attention import (
    block_layout_to_mask,
    block_sparse_attention,
    block_sparse_reference,
    local_global_layout,
    naive_attention,
    sliding_window_attention,
    sliding_window_mask,
    sliding_window_reference,
)
from tests.attention.conftest import assert_same, grads


def test_sliding_window_mask_by_hand():
    m = sliding_window_mask(5, 5, window=2, n_sink=1).int()
    assert m.tolist() == [[1, 0, 0, 0, 0],
                          [1, 1, 0, 0, 0],
                          [1, 1, 1, 0, 0],
                          [1, 0, 1, 1, 0],
                          [1, 0, 0, 1, 1]]
    # decoding: 2 new queries at positions 4, 5 of 6 keys, no sinks
    assert sliding_window_mask(2, 6, window=3).int().tolist() == [[0, 0, 1, 1, 1, 0],
                                                                  [0, 0, 0, 1, 1, 1]]


def test_window_as_long_as_seq_is_causal():
    assert torch.equal(sliding_window_mask(7, 7, window=7), torch.ones(7, 7).tril().bool())


@pytest.mark.parametrize("window,n_sink,block", [(4, 0, 4), (5, 2, 3), (1, 1, 8), (40, 0, 16)])
def test_band_attention_equals_masked_reference(qkv, window, n_sink, block):
    q, k, v = qkv(seq_q=29)
    out = sliding_window_attention(q, k, v, window, n_sink, block=block)
    ref = sliding_window_reference(q, k, v, window, n_sink)
    assert_same(out, ref)
    assert_same(grads(out, (q, k, v)), grads(ref, (q, k, v)))


def test_sliding_window_bad_args(qkv):
    with pytest.raises(ValueError, match="window"):
        sliding_window_mask(4, 4, window=0)
    q, k, v = qkv(seq_q=4, seq_k=6)
    with pytest.raises(ValueError, match="self-attention"):
        sliding_window_attention(q, k, v, 2)


def test_local_global_layout():
    layout = local_global_layout(5, n_local=2, n_global=1).int()
    assert layout.tolist() == [[1, 0, 0, 0, 0],
                               [1, 1, 0, 0, 0],
                               [1, 1, 1, 0, 0],
                               [1, 0, 1, 1, 0],
                               [1, 0, 0, 1, 1]]


@pytest.mark.parametrize("seq,block", [(32, 8), (30, 8), (17, 4)])
def test_block_sparse_equals_reference(qkv, seq, block):
    q, k, v = qkv(seq_q=seq)
    n = -(-seq // block)
    per_head = torch.stack([local_global_layout(n, 1 + h % 2, h % 3) for h in range(4)])
    for layout in (local_global_layout(n), per_head):
        out = block_sparse_attention(q, k, v, layout, block)
        ref = block_sparse_reference(q, k, v, layout, block)
        assert_same(out, ref)
        assert_same(grads(out, (q, k, v)), grads(ref, (q, k, v)))


def test_dense_layout_is_causal_attention(qkv):
    q, k, v = qkv(seq_q=20)
    dense = torch.ones(5, 5, dtype=torch.bool).tril()
    assert_same(block_sparse_attention(q, k, v, dense, 4), naive_attention(q, k, v, causal=True))


def test_block_layout_to_mask_shapes():
    mask = block_layout_to_mask(torch.eye(3, dtype=torch.bool), 2, 5, 5)
    assert mask.shape == (5, 5) and mask[4, 4] and not mask[4, 1] and not mask[0, 1]
    with pytest.raises(ValueError, match="blocks"):
        block_layout_to_mask(torch.eye(2, dtype=torch.bool), 2, 5, 5)


def test_layout_must_keep_the_diagonal(qkv):
    q, k, v = qkv(seq_q=8)
    with pytest.raises(ValueError, match="diagonal"):
        block_sparse_attention(q, k, v, torch.zeros(2, 2, dtype=torch.bool), 4)


def test_sliding_window_context_drives_the_model():
    model_mod = pytest.importorskip("llmlab.model")
    from llmlab.attention import sliding_window_context

    torch.manual_seed(0)
    cfg = model_mod.GPTConfig(vocab_size=40, block_size=32, n_layer=2, n_head=2, d_model=16)
    model = model_mod.GPT(cfg).eval()
    idx = torch.randint(0, 40, (1, 20))
    with torch.no_grad():
        full = model(idx)
        wide = model(idx, sliding_window_context(1, 20, window=20))
        narrow = model(idx, sliding_window_context(1, 20, window=3, n_sink=1))
        # with window 3 and 2 layers, position 10 depends on positions >= 6 and the sink only
        idx2 = idx.clone()
        idx2[0, 2:5] = (idx2[0, 2:5] + 1) % 40
        narrow2 = model(idx2, sliding_window_context(1, 20, window=3, n_sink=1))
    torch.testing.assert_close(wide, full, atol=1e-5, rtol=1e-4)
    assert not torch.allclose(narrow, full, atol=1e-4)
    torch.testing.assert_close(narrow2[0, 10], narrow[0, 10], atol=1e-5, rtol=1e-4)
