"""The KV memory calculator against published sizes and against a real cache's bytes."""

from __future__ import annotations

import pytest
import torch

from llmlab.attention import LAYER_KINDS, REAL_CONFIGS
from llmlab.kvcache import (
    ContiguousKVCache,
    kv_cache_bytes,
    kv_spec,
    layout_waste,
    mixed_lengths,
)
from llmlab.model import GPT, GPTConfig


def test_published_sizes():
    # Llama 3 8B: 32 layers x 8 KV heads x 128 x 2 (K, V) x 2 bytes = 128 KiB per token
    assert kv_cache_bytes(REAL_CONFIGS["Llama 3 8B"], batch=1, context=8192) == 2 ** 30
    gpt2 = {"n_layer": 12, "n_head": 12, "n_embd": 768}  # HF GPT-2 small config.json names
    assert kv_cache_bytes(gpt2, 1, 1) == 12 * 2 * 768 * 2
    deepseek = {"num_hidden_layers": 61, "num_attention_heads": 128, "kv_lora_rank": 512,
                "qk_rope_head_dim": 64}  # MLA: only the latent and the RoPE key
    assert kv_cache_bytes(deepseek, 1, 1) == 61 * 576 * 2
    assert kv_cache_bytes(gpt2, 8, 1024, bytes_per_number=0.5) == 8 * 1024 * 12 * 1536 // 2


def test_sliding_window_caps_the_cache():
    mistral = {"num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
               "hidden_size": 4096, "sliding_window": 4096}
    assert kv_cache_bytes(mistral, 1, 32768) == kv_cache_bytes(mistral, 1, 4096)


@torch.no_grad()
@pytest.mark.parametrize("attention", ["gqa", "mla"])
def test_calculator_matches_a_real_cache(attention, vocab):
    cfg = GPTConfig.llama_style(vocab_size=vocab, n_layer=2, n_head=4, n_kv_head=2, d_model=64,
                                attention=attention)
    cache = ContiguousKVCache(cfg.n_layer)
    ids = torch.randint(0, vocab, (3, 11))
    ctx = cache.prepare(ids)
    GPT(cfg, kinds=LAYER_KINDS).eval()(ids, ctx)
    cache.commit(ctx)
    assert cache.used_bytes() == kv_cache_bytes(cfg, 3, 11, bytes_per_number=4)  # fp32
    assert kv_spec(cfg).kind == ("gqa" if attention == "gqa" else "mla")


def test_layout_waste():
    w = layout_waste([10, 100, 3], max_len=256, block_size=16)
    assert (w.used, w.contiguous, w.paged) == (113, 768, 16 + 112 + 16)
    assert w.paged_waste < w.contiguous_waste
    with pytest.raises(ValueError, match="max_len"):
        layout_waste([300], max_len=256, block_size=16)


def test_mixed_lengths_is_seeded_and_bounded():
    a = mixed_lengths(300, max_len=1024, seed=3)
    assert a == mixed_lengths(300, max_len=1024, seed=3) != mixed_lengths(300, 1024, seed=4)
    assert 1 <= min(a) and max(a) == 1024  # the long tail reaches the cap
    assert 150 < sorted(a)[150] < 600  # median of two log-normals with medians ~150
