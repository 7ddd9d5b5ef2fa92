"""GPTConfig: defaults, derived sizes, validation."""

import pytest

from llmlab.model import GPTConfig


def test_unknown_key_is_a_value_error_naming_it():
    with pytest.raises(ValueError, match="n_layers"):
        GPTConfig(n_layers=3)
    with pytest.raises(ValueError, match="dropout"):
        GPTConfig.from_dict({"dropout": 0.1})


@pytest.mark.parametrize("key,value", [("norm", "batchnorm"), ("mlp", "relu"),
                                       ("position", "alibi"), ("rope_layout", "x"),
                                       ("attention", "linear")])
def test_bad_choices_are_rejected(key, value):
    with pytest.raises(ValueError, match=key):
        GPTConfig(**{key: value})


def test_heads_must_divide():
    with pytest.raises(ValueError, match="multiple of n_kv_head"):
        GPTConfig(n_head=6, n_kv_head=4)
    with pytest.raises(ValueError, match="not divisible"):
        GPTConfig(d_model=100, n_head=3)
    with pytest.raises(ValueError, match="even d_head"):
        GPTConfig(d_model=60, n_head=4)
    with pytest.raises(ValueError, match="positive"):
        GPTConfig(n_layer=0)


def test_derived_defaults():
    c = GPTConfig.llama_style(d_model=256, n_head=8)
    assert (c.n_kv_head, c.d_head, c.d_ff, c.n_rep) == (8, 32, 704, 1)  # 8/3*256=682 -> 704
    g = GPTConfig.gpt2_style(d_model=64, n_head=4)
    assert (g.d_ff, g.norm, g.position, g.bias) == (256, "layernorm", "learned", True)


def test_round_trip_and_replace():
    c = GPTConfig.llama_style(n_kv_head=2, attention_options={"d_c": 16})
    assert GPTConfig.from_dict(c.to_dict()) == c
    assert c.replace(n_layer=7).n_layer == 7
