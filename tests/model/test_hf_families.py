"""GPT-2, Llama (1–3.x, SmolLM/TinyLlama layouts), Mistral, Qwen2 and Qwen3 against transformers:
logits with and without llmlab's KV cache, greedy decoding, to_hf round trips, and the refusals of
what llmlab cannot represent. Tiny random configs built locally; nothing is downloaded."""

import pytest
import torch

from llmlab.model import (
    GPT,
    ContiguousKVCache,
    GPTConfig,
    config_from_hf,
    from_hf,
    generate,
    to_hf,
)
from llmlab.model.hf import hf_model_type

transformers = pytest.importorskip("transformers")
pytestmark = pytest.mark.parity

V = 97
ATOL, RTOL = 1e-5, 1e-4  # fp32; survives another BLAS
LLAMA3_ROPE = {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0,
               "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 16}
DECODER = dict(vocab_size=V, max_position_embeddings=64, hidden_size=48, intermediate_size=80,
               num_hidden_layers=2, num_attention_heads=6, num_key_value_heads=2,
               bos_token_id=None, eos_token_id=None, pad_token_id=None)
FAMILIES = {
    "gpt2": lambda: transformers.GPT2Config(vocab_size=V, n_positions=32, n_embd=32, n_layer=2,
                                            n_head=4, bos_token_id=None, eos_token_id=None),
    "llama2_tinyllama": lambda: transformers.LlamaConfig(**DECODER),
    "smollm_tied": lambda: transformers.LlamaConfig(**DECODER, tie_word_embeddings=True),
    "llama3_rope_scaling": lambda: transformers.LlamaConfig(**DECODER,
                                                            rope_parameters=dict(LLAMA3_ROPE)),
    "mistral": lambda: transformers.MistralConfig(**DECODER, sliding_window=None),
    "mistral_window_covers_all": lambda: transformers.MistralConfig(**DECODER, sliding_window=64),
    "qwen2": lambda: transformers.Qwen2Config(**DECODER),
    "qwen3": lambda: transformers.Qwen3Config(**DECODER, head_dim=16),
}


def _randomize(model):
    """Norm gains start at 1 and biases at 0; randomise them so a mix-up would show."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name or "ln_" in name or name.endswith("bias"):
                p.add_(torch.randn_like(p) * 0.1)
    return model.eval()


def _hf(cfg):
    torch.manual_seed(0)
    return _randomize(transformers.AutoModelForCausalLM.from_config(
        cfg, attn_implementation="eager"))


def _ids(t=14, batch=2, seed=1):
    return torch.randint(0, V, (batch, t), generator=torch.Generator().manual_seed(seed))


def _close(a, b):
    torch.testing.assert_close(a, b, atol=ATOL, rtol=RTOL)


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def pair(request):
    hf = _hf(FAMILIES[request.param]())
    return hf, from_hf(hf).eval()


def test_logits_match_full_forward(pair):
    hf, ours = pair
    idx = _ids()
    with torch.no_grad():
        _close(ours(idx), hf(idx).logits)


def test_logits_match_with_kv_cache(pair):
    """Prefill 6 tokens, then decode one at a time through the StepContext seam: every step's
    logits equal transformers' full forward over the whole sequence."""
    hf, ours = pair
    idx = _ids()
    cache = ContiguousKVCache(ours.config.n_layer, capacity=4)  # grows while decoding
    steps = [idx[:, :6]] + [idx[:, t:t + 1] for t in range(6, idx.shape[1])]
    logits = []
    with torch.no_grad():
        for step in steps:
            ctx = cache.prepare(step)
            logits.append(ours(step, ctx))
            cache.commit(ctx)
        _close(torch.cat(logits, dim=1), hf(idx).logits)
    assert cache.length == idx.shape[1]


def test_greedy_generate_matches_transformers(pair):
    hf, ours = pair
    prompt = _ids(t=5)
    with torch.no_grad():
        theirs = hf.generate(prompt, max_new_tokens=8, do_sample=False,
                             attention_mask=torch.ones_like(prompt), pad_token_id=0)
    mine = generate(ours, prompt, max_new_tokens=8, temperature=0)
    assert theirs.shape == (2, 13)
    assert torch.equal(mine, theirs)


def test_left_padded_batch_generate_matches_transformers(pair):
    """Prompts of different lengths, left-padded: the cache masks the padding and counts
    positions from each row's first real token, as transformers does."""
    hf, ours = pair
    prompt = _ids(t=7, seed=3)
    mask = torch.ones_like(prompt)
    mask[0, :3] = 0
    prompt = prompt.masked_fill(mask == 0, 0)
    with torch.no_grad():
        theirs = hf.generate(prompt, attention_mask=mask, max_new_tokens=6, do_sample=False,
                             pad_token_id=0)
    assert torch.equal(generate(ours, prompt, attention_mask=mask, max_new_tokens=6), theirs)


def test_family_features_are_mapped():
    assert from_hf(_hf(FAMILIES["qwen2"]())).config.qkv_bias
    qwen3 = from_hf(_hf(FAMILIES["qwen3"]())).config
    assert qwen3.qk_norm and qwen3.d_head == 16 and not qwen3.qkv_bias
    llama3 = from_hf(_hf(FAMILIES["llama3_rope_scaling"]())).config
    assert llama3.rope_scaling["rope_type"] == "llama3" and llama3.rope_base == 500000.0


@pytest.mark.parametrize("family,feature", [
    ("qwen2", "qkv_bias"), ("qwen3", "qk_norm"), ("llama3_rope_scaling", "rope_scaling"),
])
def test_each_feature_matters(family, feature):
    """Without the feature the same weights give other logits: the parity above is not vacuous."""
    hf = _hf(FAMILIES[family]())
    ours = from_hf(hf).eval()
    off = {"qkv_bias": False, "qk_norm": False, "rope_scaling": {}}[feature]
    plain = GPT(ours.config.replace(**{feature: off})).eval()
    plain.load_state_dict(ours.state_dict(), strict=False)
    idx = _ids(t=30)
    with torch.no_grad():
        assert (plain(idx) - hf(idx).logits).abs().max() > 1e-3


def test_qwen3_interleaved_layout_permutes_the_qk_norm_gains():
    hf = _hf(FAMILIES["qwen3"]())
    ours = from_hf(hf.state_dict(), hf.config.to_dict(), rope_layout="interleaved").eval()
    idx = _ids()
    with torch.no_grad():
        _close(ours(idx), hf(idx).logits)
    sd, _ = to_hf(ours)
    for name, w in hf.state_dict().items():
        if name in sd:
            torch.testing.assert_close(sd[name], w)


def _ours(**overrides):
    torch.manual_seed(0)
    base = dict(vocab_size=V, block_size=32, d_model=32, n_head=4, n_kv_head=2, n_layer=2)
    return _randomize(GPT(GPTConfig.llama_style(**{**base, **overrides})))


ROUND_TRIPS = {
    "gpt2": (lambda: _randomize(GPT(GPTConfig.gpt2_style(
        vocab_size=V, block_size=32, d_model=32, n_head=4, n_layer=2))), None, "GPT2LMHeadModel"),
    "llama": (lambda: _ours(tie_embeddings=False), None, "LlamaForCausalLM"),
    "llama3": (lambda: _ours(rope_base=500000.0, rope_scaling={
        k: v for k, v in LLAMA3_ROPE.items() if k != "rope_theta"}), None, "LlamaForCausalLM"),
    "mistral": (lambda: _ours(tie_embeddings=False), "mistral", "MistralForCausalLM"),
    "qwen2": (lambda: _ours(qkv_bias=True), None, "Qwen2ForCausalLM"),
    "qwen3": (lambda: _ours(qk_norm=True, d_head=16), None, "Qwen3ForCausalLM"),
    "qwen3_interleaved": (lambda: _ours(qk_norm=True, rope_layout="interleaved"), None,
                          "Qwen3ForCausalLM"),
}


@pytest.mark.parametrize("case", sorted(ROUND_TRIPS))
def test_to_hf_round_trip(case):
    build, model_type, family = ROUND_TRIPS[case]
    ours = build()
    sd, hf_cfg = to_hf(ours, model_type)
    hf = transformers.AutoModelForCausalLM.from_config(hf_cfg, attn_implementation="eager").eval()
    assert type(hf).__name__ == family
    result = hf.load_state_dict(sd, strict=False)
    assert not result.missing_keys and not result.unexpected_keys
    idx = _ids(t=17)
    with torch.no_grad():
        _close(ours(idx), hf(idx).logits)
        back = from_hf(hf, rope_layout=ours.config.rope_layout).eval()
        _close(back(idx), ours(idx))
    assert back.config == ours.config.replace(init_std=back.config.init_std)


def _refused(cfg, match, sd=None):
    model = _hf(cfg)
    with pytest.raises(ValueError, match=match):
        from_hf(model.state_dict() | (sd or {}), model.config)


def test_sliding_window_that_binds_is_refused():
    _refused(transformers.MistralConfig(**DECODER, sliding_window=8), "sliding_window=8")
    _refused(transformers.Qwen2Config(**DECODER, use_sliding_window=True, sliding_window=8,
                                      max_window_layers=1), "sliding_window=8")
    # Qwen with use_sliding_window but every layer below max_window_layers: full attention
    hf = _hf(transformers.Qwen2Config(**DECODER, use_sliding_window=True, sliding_window=8,
                                      max_window_layers=2))
    assert from_hf(hf).config.qkv_bias


@pytest.mark.parametrize("rope", [
    {"rope_type": "linear", "rope_theta": 10000.0, "factor": 2.0},
    {"rope_type": "dynamic", "rope_theta": 10000.0, "factor": 2.0},
])
def test_unimplemented_rope_scaling_is_refused(rope):
    with pytest.raises(ValueError, match=f"rope_scaling type '{rope['rope_type']}'"):
        from_hf({}, {**transformers.LlamaConfig(**DECODER).to_dict(), "rope_parameters": rope})
    with pytest.raises(ValueError, match="rope_scaling type"):
        GPTConfig(rope_scaling=rope)


def test_older_config_json_keys_are_read():
    """config.json files written before transformers 5 carry rope_theta and rope_scaling."""
    d = transformers.LlamaConfig(**DECODER).to_dict()
    d.pop("rope_parameters", None)
    d |= {"rope_theta": 500000.0, "rope_scaling": {k: v for k, v in LLAMA3_ROPE.items()
                                                   if k != "rope_theta"}}
    got = config_from_hf(d)
    assert got.rope_base == 500000.0 and got.rope_scaling["factor"] == 8.0


def test_activation_bias_and_head_mismatches_are_refused():
    _refused(transformers.LlamaConfig(**DECODER, hidden_act="gelu"), "hidden_act 'gelu'")
    _refused(transformers.Qwen3Config(**DECODER, head_dim=16, attention_bias=True),
             "attention_bias")
    _refused(transformers.GPT2Config(vocab_size=V, n_positions=32, n_embd=32, n_layer=2, n_head=4,
                                     activation_function="relu"), "activation_function 'relu'")
    untied = transformers.LlamaConfig(**DECODER)
    model = _hf(untied)
    tied = transformers.LlamaConfig(**DECODER, tie_word_embeddings=True)
    with pytest.raises(ValueError, match="tie_word_embeddings=True"):
        from_hf(model.state_dict(), tied)
    sd = {k: v for k, v in model.state_dict().items() if k != "lm_head.weight"}
    with pytest.raises(ValueError, match="tie_word_embeddings=False"):
        from_hf(sd, untied)
    extra = {"model.layers.0.self_attn.q_norm.weight": torch.ones(8)}
    _refused(transformers.LlamaConfig(**DECODER), "cannot represent", extra)


def test_to_hf_refuses_what_no_family_holds():
    with pytest.raises(ValueError, match="Qwen3 has neither"):
        hf_model_type(GPTConfig(qk_norm=True, qkv_bias=True))
    with pytest.raises(ValueError, match="not 'qwen2'"):
        to_hf(GPT(GPTConfig(n_layer=1)), "qwen2")
    with pytest.raises(ValueError, match="Mistral has no biases"):
        to_hf(GPT(GPTConfig(n_layer=1, bias=True)), "mistral")


def test_config_options_belong_to_gqa_and_default_off():
    c = GPTConfig()
    assert (c.qkv_bias, c.qk_norm, c.rope_scaling) == (False, False, {})
    assert not any("q_norm" in n or "q_proj.bias" in n for n in GPT(c).state_dict())
    for key in ("qkv_bias", "qk_norm"):
        with pytest.raises(ValueError, match=f"GPTConfig.{key}"):
            GPTConfig(attention="mla", **{key: True})
    scaling = {k: v for k, v in LLAMA3_ROPE.items() if k != "rope_theta"}
    with pytest.raises(ValueError, match="position='rope'"):
        GPTConfig.gpt2_style(rope_scaling=scaling)


def test_gpt2_hub_names_and_missing_weights():
    """OpenAI's GPT-2 checkpoint stores GPT2Model names (no ``transformer.`` prefix)."""
    hf = _hf(FAMILIES["gpt2"]())
    bare = {k.removeprefix("transformer."): v for k, v in hf.state_dict().items()
            if k != "lm_head.weight"}
    idx = _ids()
    with torch.no_grad():
        _close(from_hf(bare, hf.config).eval()(idx), hf(idx).logits)
    del bare["h.1.mlp.c_fc.bias"]
    with pytest.raises(ValueError, match=r"missing .*h\.1\.mlp\.c_fc\.bias"):
        from_hf(bare, hf.config)
    extra = hf.state_dict() | {"transformer.h.0.attn.q_norm.weight": torch.ones(8)}
    with pytest.raises(ValueError, match="cannot represent"):
        from_hf(extra, hf.config)
