import math

import pytest
import torch

from llmlab.attention import (
    RopeScaling,
    ScaledRotaryEmbedding,
    alibi_bias,
    alibi_slopes,
    scaled_frequencies,
    set_rope_scaling,
    yarn_ramp,
)
from llmlab.nn import CausalSelfAttention, RotaryEmbedding, rope_frequencies


def test_pi_maps_long_positions_onto_trained_angles():
    pi = ScaledRotaryEmbedding(16, scaling=RopeScaling("pi", factor=4, original_max_len=64))
    plain = RotaryEmbedding(16)
    cos_pi, sin_pi = pi(torch.tensor([[0, 40, 200]]))
    cos, sin = plain(torch.tensor([[0, 10, 50]]))
    torch.testing.assert_close(cos_pi, cos)
    torch.testing.assert_close(sin_pi, sin)


def test_ntk_keeps_the_fastest_and_interpolates_the_slowest_frequency():
    inv, _ = scaled_frequencies(64, 10000.0, RopeScaling("ntk", factor=8))
    base = rope_frequencies(64)
    assert math.isclose(inv[0].item(), base[0].item())
    assert math.isclose((base[-1] / inv[-1]).item(), 8.0, rel_tol=1e-4)
    assert torch.all(inv <= base + 1e-9)


def test_yarn_ramp_and_temperature():
    gamma = yarn_ramp(64, 10000.0, 2048, 32, 1)
    assert gamma[0] == 0 and gamma[-1] == 1 and torch.all(gamma.diff() >= 0)
    inv, factor = scaled_frequencies(64, 10000.0, RopeScaling("yarn", 16, 2048))
    assert math.isclose(factor, 0.1 * math.log(16) + 1)
    base = rope_frequencies(64)
    assert torch.equal(inv[gamma == 0], base[gamma == 0])
    torch.testing.assert_close(inv[gamma == 1], base[gamma == 1] / 16)


@pytest.mark.parity
@pytest.mark.parametrize("kind,hf_type", [("pi", "linear"), ("yarn", "yarn"), ("ntk", "dynamic")])
@pytest.mark.parametrize("factor", [2.0, 4.0, 8.0])
def test_parity_with_transformers_rope_init(kind, hf_type, factor):
    pytest.importorskip("transformers")
    from transformers import LlamaConfig
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    max_len = 256
    params = {"rope_type": hf_type, "factor": factor, "rope_theta": 10000.0}
    if hf_type == "yarn":
        params["original_max_position_embeddings"] = max_len
    cfg = LlamaConfig(hidden_size=128, num_attention_heads=2, max_position_embeddings=max_len,
                      rope_parameters=params)
    # HF's dynamic NTK equals the static NTK-aware base when seq_len = L (2s - 1) / s
    seq_len = int(max_len * (2 * factor - 1) / factor) if hf_type == "dynamic" else None
    inv_hf, attn_hf = ROPE_INIT_FUNCTIONS[hf_type](cfg, None, seq_len=seq_len)
    inv, attn = scaled_frequencies(64, 10000.0, RopeScaling(kind, factor, max_len))
    torch.testing.assert_close(inv, inv_hf.float(), rtol=1e-5, atol=1e-8)
    assert math.isclose(attn, attn_hf, rel_tol=1e-6)


def test_set_rope_scaling_replaces_shared_rope():
    rope = RotaryEmbedding(8)
    layers = torch.nn.ModuleList([CausalSelfAttention(32, 4, rope=rope) for _ in range(2)])
    set_rope_scaling(layers, RopeScaling("yarn", 4, 64), max_seq_len=256)
    assert isinstance(layers[0].rope, ScaledRotaryEmbedding) and layers[0].rope is layers[1].rope
    assert layers[0].rope.cos_table.shape[0] == 256
    with pytest.raises(ValueError, match="RotaryEmbedding"):
        set_rope_scaling(torch.nn.Linear(2, 2), RopeScaling("pi", 2))
    with pytest.raises(ValueError, match="scaling"):
        RopeScaling("longrope", 2)


def test_alibi_slopes_from_the_paper():
    assert alibi_slopes(8).tolist() == [2 ** -i for i in range(1, 9)]
    assert len(alibi_slopes(12)) == 12
    bias = alibi_bias(2, 3)  # slopes 1/16, 1/256; bias = -m (i - j)
    distance = torch.tensor([[0.0, -1, -2], [1, 0, -1], [2, 1, 0]])
    torch.testing.assert_close(bias, -torch.tensor([1 / 16, 1 / 256])[:, None, None] * distance)
    assert alibi_bias(2, 1, 3)[0, 0].tolist() == [-2 / 16, -1 / 16, 0.0]  # decoding query


@pytest.mark.parity
@pytest.mark.parametrize("n_head", [4, 6, 16])
def test_alibi_parity_with_bloom(n_head):
    pytest.importorskip("transformers")
    from transformers.models.bloom.modeling_bloom import build_alibi_tensor

    hf = build_alibi_tensor(torch.ones(1, 5), n_head, torch.float32).view(n_head, 5)
    slopes = alibi_slopes(n_head)
    torch.testing.assert_close(hf, slopes[:, None] * torch.arange(5.0))
