import pytest

from llmlab.attention import REAL_CONFIGS, KVSpec, MLAConfig, variants_of


def test_real_configs_bytes_per_token():
    assert REAL_CONFIGS["Llama 3 8B"].bytes_per_token() == 2 * 32 * 8 * 128 * 2 == 128 * 1024
    assert REAL_CONFIGS["Mistral 7B"].bytes_per_token() == 128 * 1024
    assert REAL_CONFIGS["DeepSeek-V3"].bytes_per_token() == 61 * (512 + 64) * 2 == 70272
    assert all(spec.source.startswith("https://") for spec in REAL_CONFIGS.values())


def test_window_caps_cached_tokens():
    mistral = REAL_CONFIGS["Mistral 7B"]
    assert mistral.cached_tokens(32768) == 4096 and mistral.cached_tokens(100) == 100
    assert REAL_CONFIGS["Llama 3 8B"].cached_tokens(32768) == 32768


def test_variants_ordering():
    v = variants_of(REAL_CONFIGS["Llama 3 8B"])
    mha, gqa, mqa = (v[k].bytes_per_token() for k in ("MHA", "GQA", "MQA"))
    assert mha == 4 * gqa == 32 * mqa
    ds = variants_of(REAL_CONFIGS["DeepSeek-V3"], d_head=192)
    assert ds["MHA"].bytes_per_token() / ds["MLA"].bytes_per_token() > 40
    with pytest.raises(ValueError, match="d_head"):
        variants_of(REAL_CONFIGS["DeepSeek-V3"])
    assert variants_of(REAL_CONFIGS["Mistral 7B"])["MHA"].cached_tokens(10**5) == 4096


def test_mla_spec_matches_mla_module_cache():
    cfg = MLAConfig(64, 4, kv_lora_rank=32, qk_nope_head_dim=16, qk_rope_head_dim=8,
                    v_head_dim=16)
    spec = KVSpec("toy", "mla", n_layer=3, n_head=4, kv_lora_rank=32, rope_dim=8,
                  bytes_per_number=4)
    assert spec.bytes_per_token() == 3 * cfg.cache_numbers_per_token() * 4


def test_bad_specs():
    with pytest.raises(ValueError, match=r"unknown KVSpec key.*n_layers"):
        KVSpec.from_dict({"name": "x", "kind": "gqa", "n_layers": 2})
    with pytest.raises(ValueError, match="kind"):
        KVSpec("x", "sparse", 2, 2, 2, 2)
    with pytest.raises(ValueError, match="kv_lora_rank"):
        KVSpec("x", "mla", 2, 2)
