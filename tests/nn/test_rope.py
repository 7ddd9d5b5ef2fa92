"""RoPE in both layouts: the RoFormer complex-number definition, transformers' Llama rotary,
the relative-position property, and the weight permutation between layouts."""

import pytest
import torch

from llmlab.nn import (
    RotaryEmbedding,
    apply_rope,
    interleaved_to_half_permutation,
    rope_cos_sin,
    rope_frequencies,
)


def _positions(b, t, start=0):
    return torch.arange(start, start + t).expand(b, t)


def test_interleaved_layout_is_complex_rotation():
    """RoFormer eq. 12: pairs (x_2i, x_2i+1) as a complex number times e^{i m theta_i}."""
    b, t, h, d = 2, 6, 3, 8
    x = torch.randn(b, t, h, d)
    cos, sin = rope_cos_sin(_positions(b, t), rope_frequencies(d))
    got = apply_rope(x, cos, sin, "interleaved")
    z = torch.view_as_complex(x.reshape(b, t, h, d // 2, 2).contiguous())
    angles = _positions(b, t).float()[..., None] * rope_frequencies(d)  # (b, t, d/2)
    rot = torch.polar(torch.ones_like(angles), angles)[:, :, None, :]
    ref = torch.view_as_real(z * rot).reshape(b, t, h, d)
    torch.testing.assert_close(got, ref)


@pytest.mark.parity
def test_half_layout_matches_transformers_llama():
    llama = pytest.importorskip("transformers.models.llama.modeling_llama")
    b, t, h, d = 2, 7, 4, 16
    q, k = torch.randn(b, h, t, d), torch.randn(b, 2, t, d)
    pos = _positions(b, t, start=3)
    cos, sin = rope_cos_sin(pos, rope_frequencies(d, 500000.0))
    emb_cos, emb_sin = torch.cat((cos, cos), -1), torch.cat((sin, sin), -1)  # HF duplicates
    ref_q, ref_k = llama.apply_rotary_pos_emb(q, k, emb_cos, emb_sin)
    got_q = apply_rope(q.transpose(1, 2), cos, sin, "half").transpose(1, 2)
    got_k = apply_rope(k.transpose(1, 2), cos, sin, "half").transpose(1, 2)
    torch.testing.assert_close(got_q, ref_q)
    torch.testing.assert_close(got_k, ref_k)


@pytest.mark.parametrize("layout", ["half", "interleaved"])
def test_scores_depend_only_on_relative_position(layout):
    d = 16
    rope = RotaryEmbedding(d, layout=layout, max_seq_len=64)
    q, k = torch.randn(1, 1, 1, d), torch.randn(1, 1, 1, d)

    def score(m, n):
        cm, sm = rope(torch.tensor([[m]]))
        cn, sn = rope(torch.tensor([[n]]))
        return (rope.rotate(q, cm, sm) * rope.rotate(k, cn, sn)).sum()

    torch.testing.assert_close(score(5, 2), score(40, 37))
    torch.testing.assert_close(score(100, 90), score(10, 0))  # beyond the table too
    assert not torch.allclose(score(5, 2), score(5, 3))


def test_table_and_direct_computation_agree():
    rope = RotaryEmbedding(8, max_seq_len=16)
    pos = torch.tensor([[0, 5, 15]])
    c1, s1 = rope(pos)
    c2, s2 = rope_cos_sin(pos, rope.inv_freq)
    torch.testing.assert_close(c1, c2)
    torch.testing.assert_close(s1, s2)


def test_permutation_converts_between_layouts():
    d = 12
    x = torch.randn(2, 5, 3, d)
    cos, sin = rope_cos_sin(_positions(2, 5), rope_frequencies(d))
    perm = interleaved_to_half_permutation(d)
    torch.testing.assert_close(
        apply_rope(x[..., perm], cos, sin, "half"), apply_rope(x, cos, sin, "interleaved")[..., perm]
    )


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="even"):
        rope_frequencies(7)
    with pytest.raises(ValueError, match="layout"):
        RotaryEmbedding(8, layout="spiral")
    with pytest.raises(ValueError, match="apply_rope expects"):
        apply_rope(torch.randn(2, 5, 8), torch.randn(2, 5, 4), torch.randn(2, 5, 4))
