"""Logits parity with transformers' GPT2LMHeadModel and LlamaForCausalLM (tiny random, offline)."""

import pytest
import torch

from llmlab.model import GPT, GPTConfig, from_hf, to_hf

transformers = pytest.importorskip("transformers")
pytestmark = pytest.mark.parity

V = 97


def _hf(cfg):
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(cfg, attn_implementation="eager")
    with torch.no_grad():  # norms start at 1/0; randomise them so a mix-up would show
        for name, p in model.named_parameters():
            if "norm" in name or "ln_" in name:
                p.add_(torch.randn_like(p) * 0.1)
    return model.eval()


def _max_diff(ours, hf, idx):
    with torch.no_grad():
        return (ours(idx) - hf(idx).logits).abs().max().item()


GPT2 = dict(vocab_size=V, n_positions=32, n_embd=32, n_layer=2, n_head=4,
            bos_token_id=0, eos_token_id=0)
LLAMA = dict(vocab_size=V, max_position_embeddings=64, hidden_size=48, intermediate_size=80,
             num_hidden_layers=2, num_attention_heads=6, bos_token_id=0, eos_token_id=0)
CASES = {
    "gpt2": lambda: transformers.GPT2Config(**GPT2),
    "llama_mha": lambda: transformers.LlamaConfig(**LLAMA, num_key_value_heads=6),
    "llama_gqa": lambda: transformers.LlamaConfig(**LLAMA, num_key_value_heads=2,
                                                  rope_parameters={"rope_type": "default",
                                                                   "rope_theta": 500000.0}),
    "llama_mqa_tied": lambda: transformers.LlamaConfig(**LLAMA, num_key_value_heads=1,
                                                       tie_word_embeddings=True),
    "llama_bias_headdim": lambda: transformers.LlamaConfig(**LLAMA, num_key_value_heads=3,
                                                           head_dim=16, attention_bias=True,
                                                           mlp_bias=True),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_from_hf_logits_match(case):
    hf = _hf(CASES[case]())
    idx = torch.randint(0, V, (2, 19), generator=torch.Generator().manual_seed(1))
    assert _max_diff(from_hf(hf).eval(), hf, idx) <= 1e-4


def test_from_state_dict_and_interleaved_layout():
    hf = _hf(CASES["llama_gqa"]())
    idx = torch.randint(0, V, (2, 19))
    ours = from_hf(hf.state_dict(), hf.config.to_dict(), rope_layout="interleaved").eval()
    assert ours.config.rope_layout == "interleaved"
    assert _max_diff(ours, hf, idx) <= 1e-4
    # the layouts genuinely differ: the same weights under the other layout disagree
    ours.rope.layout = "half"
    assert _max_diff(ours, hf, idx) > 1e-3


@pytest.mark.parametrize("config", [
    GPTConfig.gpt2_style(vocab_size=V, block_size=32, d_model=32, n_head=4, n_layer=2),
    GPTConfig.llama_style(vocab_size=V, block_size=32, d_model=32, n_head=4, n_kv_head=2,
                          n_layer=2, tie_embeddings=False),
    GPTConfig.llama_style(vocab_size=V, block_size=32, d_model=32, n_head=4, n_kv_head=1,
                          n_layer=2, rope_layout="interleaved"),
], ids=["gpt2", "llama", "llama_interleaved_tied"])
def test_to_hf_round_trip(config):
    torch.manual_seed(0)
    ours = GPT(config).eval()
    sd, hf_cfg = to_hf(ours)
    hf = transformers.AutoModelForCausalLM.from_config(hf_cfg).eval()
    result = hf.load_state_dict(sd, strict=False)
    assert not result.missing_keys and not result.unexpected_keys
    idx = torch.randint(0, V, (2, 17))
    assert _max_diff(ours, hf, idx) <= 1e-4
    back = from_hf(hf, rope_layout=config.rope_layout).eval()
    torch.testing.assert_close(back(idx), ours(idx))


def test_unsupported_configs_raise():
    with pytest.raises(ValueError, match="model_type"):
        from_hf({}, {"model_type": "bert"})
    with pytest.raises(ValueError, match="neither"):
        to_hf(GPT(GPTConfig(norm="layernorm", mlp="swiglu", position="learned")))
    with pytest.raises(ValueError, match="config is required"):
        from_hf({})
