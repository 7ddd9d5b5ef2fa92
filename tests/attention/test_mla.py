import pytest
import torch

from llmlab.attention import LAYER_KINDS, MLAConfig, MultiHeadLatentAttention, absorbed_attention
from llmlab.kvcache import ContiguousKVCache
from llmlab.nn import StepContext
from tests.attention.conftest import assert_same, grads

CFG = MLAConfig(d_model=32, n_head=4, kv_lora_rank=12, qk_nope_head_dim=8, qk_rope_head_dim=4,
                v_head_dim=6, q_lora_rank=10)


def _pair(cfg=CFG, seed=0):
    torch.manual_seed(seed)
    naive = MultiHeadLatentAttention(cfg, absorb=False).double()
    absorbed = MultiHeadLatentAttention(cfg, absorb=True).double()
    absorbed.load_state_dict(naive.state_dict())
    return naive, absorbed


@pytest.mark.parametrize("q_lora_rank", [0, 10])
def test_absorbed_equals_naive_forward_and_grads(q_lora_rank):
    cfg = MLAConfig(**{**CFG.__dict__, "q_lora_rank": q_lora_rank})
    naive, absorbed = _pair(cfg)
    x = torch.randn(2, 11, 32, dtype=torch.float64, requires_grad=True)
    y_naive, y_abs = naive(x), absorbed(x)
    assert_same(y_naive, y_abs)
    params = [p for _, p in sorted(naive.named_parameters())]
    params_abs = [p for _, p in sorted(absorbed.named_parameters())]
    assert_same(grads(y_naive, [x, *params]), grads(y_abs, [x, *params_abs]))


def test_absorbed_attention_equals_per_head_attention():
    """The functional form equals per-head attention built from the up-projections."""
    g = torch.Generator().manual_seed(0)
    b, s, h, dn, dr, dc, dv = 2, 5, 3, 4, 2, 6, 5
    q_nope, q_rope = torch.randn(b, s, h, dn, generator=g), torch.randn(b, s, h, dr, generator=g)
    c_kv, k_rope = torch.randn(b, s, dc, generator=g), torch.randn(b, s, dr, generator=g)
    w_uk, w_uv = torch.randn(h, dn, dc, generator=g), torch.randn(h, dv, dc, generator=g)
    out = absorbed_attention(q_nope, q_rope, c_kv, k_rope, w_uk, w_uv, scale=0.5)
    k = torch.cat([torch.einsum("hnc,btc->bhtn", w_uk, c_kv),
                   k_rope[:, None].expand(b, h, s, dr)], -1)
    v = torch.einsum("hvc,btc->bhtv", w_uv, c_kv)
    q = torch.cat([q_nope, q_rope], -1).transpose(1, 2)
    scores = (q @ k.transpose(-1, -2) * 0.5).masked_fill(~torch.ones(s, s).tril().bool(), -1e9)
    ref = (scores.softmax(-1) @ v).transpose(1, 2)
    assert_same(out, ref, atol=1e-5, rtol=1e-4)


def test_decoding_with_cache_equals_full_forward_and_caches_only_latent():
    naive, absorbed = _pair()
    x = torch.randn(2, 9, 32, dtype=torch.float64)
    full = naive(x)
    cache = ContiguousKVCache(n_layer=1, capacity=4)
    steps = []
    for chunk in [x[:, :5], *x[:, 5:].split(1, 1)]:  # prefill, then one token at a time
        ctx = cache.prepare(torch.zeros(chunk.shape[:2], dtype=torch.long))
        steps.append(absorbed(chunk, ctx))
        cache.commit(ctx)
    assert_same(torch.cat(steps, 1), full)
    c_kv, k_rope = cache.tensors(0)
    assert c_kv.shape == (2, 9, 12) and k_rope.shape == (2, 9, 4)


def test_rope_makes_scores_depend_on_position():
    torch.manual_seed(0)
    attn = MultiHeadLatentAttention(CFG).double()
    x = torch.randn(1, 6, 32, dtype=torch.float64)
    y0 = attn(x, StepContext(torch.arange(6)[None]))
    y_shift = attn(x, StepContext(torch.arange(6)[None] + 7))  # relative positions unchanged
    assert_same(y0, y_shift, atol=1e-6, rtol=1e-5)  # cos/sin are computed in fp32
    y_scrambled = attn(x, StepContext(torch.tensor([[0, 3, 1, 9, 2, 5]])))
    assert not torch.allclose(y0, y_scrambled)


def test_config_errors_and_gpt_options():
    with pytest.raises(ValueError, match="kv_lora_rank"):
        MLAConfig(32, 4, 0, 8, 4, 8)
    with pytest.raises(ValueError, match="even"):
        MLAConfig(32, 4, 8, 8, 3, 8)

    class Cfg:  # what GPTConfig offers
        d_model, n_head, d_head, rope_base, norm_eps = 32, 4, 8, 10000.0, 1e-6
        attention_options = {"kv_lora_rank": 16}

    cfg = MLAConfig.from_config(Cfg)
    assert (cfg.kv_lora_rank, cfg.qk_rope_head_dim, cfg.qk_nope_head_dim) == (16, 4, 8)
    Cfg.attention_options = {"latent": 3}
    with pytest.raises(ValueError, match="latent"):
        MLAConfig.from_config(Cfg)
    with pytest.raises(ValueError, match="expects x"):
        MultiHeadLatentAttention(CFG)(torch.randn(1, 3, 31))


def test_gpt_with_mla_decodes_like_full_forward():
    model_mod = pytest.importorskip("llmlab.model")
    cfg = model_mod.GPTConfig(vocab_size=64, block_size=32, n_layer=2, n_head=4, d_model=32,
                              attention="mla", attention_options={"kv_lora_rank": 16})
    torch.manual_seed(0)
    with pytest.raises(ValueError, match="llmlab.attention.LAYER_KINDS"):
        model_mod.GPT(cfg)  # MLA is chapter 03's: the model needs its layer kinds
    model = model_mod.GPT(cfg, kinds=LAYER_KINDS).eval()
    idx = torch.randint(0, 64, (2, 10))
    with torch.no_grad():
        full = model(idx)
        cache, steps = ContiguousKVCache(n_layer=2), []
        for chunk in [idx[:, :6], *idx[:, 6:].split(1, 1)]:
            ctx = cache.prepare(chunk)
            steps.append(model(chunk, ctx))
            cache.commit(ctx)
    assert_same(torch.cat(steps, 1), full, atol=1e-4, rtol=1e-4)


@pytest.mark.parity
@pytest.mark.parametrize("layout", ["half", "interleaved"])
@pytest.mark.parametrize("q_lora_rank", [None, 10])
def test_parity_with_transformers_deepseek_v3(layout, q_lora_rank):
    pytest.importorskip("transformers")
    from transformers import DeepseekV3Config
    from transformers.models.deepseek_v3.modeling_deepseek_v3 import (
        DeepseekV3Attention,
        DeepseekV3RotaryEmbedding,
    )

    hf_cfg = DeepseekV3Config(hidden_size=32, num_attention_heads=4, num_key_value_heads=4,
                              kv_lora_rank=12, q_lora_rank=q_lora_rank, qk_nope_head_dim=8,
                              qk_rope_head_dim=4, v_head_dim=6, rope_interleave=layout != "half",
                              attention_bias=False, vocab_size=64, num_hidden_layers=1)
    hf_cfg._attn_implementation = "eager"
    torch.manual_seed(0)
    hf = DeepseekV3Attention(hf_cfg, layer_idx=0).double().eval()
    from llmlab.nn import RotaryEmbedding
    ours = MultiHeadLatentAttention(MLAConfig(**{**CFG.__dict__, "q_lora_rank": q_lora_rank or 0}),
                                    rope=RotaryEmbedding(4, layout=layout)).double()
    ours.load_state_dict(hf.state_dict(), strict=True)
    x = torch.randn(2, 7, 32, dtype=torch.float64)
    positions = torch.arange(7)[None].expand(2, 7)
    cos, sin = DeepseekV3RotaryEmbedding(hf_cfg)(x, positions)
    mask = torch.full((7, 7), float("-inf")).triu(1)[None, None].double()
    with torch.no_grad():
        expected = hf(x, (cos, sin), mask)[0]
        assert_same(ours(x, StepContext(positions)), expected, atol=1e-6, rtol=1e-5)
        ours.absorb = True
        assert_same(ours(x, StepContext(positions)), expected, atol=1e-6, rtol=1e-5)
