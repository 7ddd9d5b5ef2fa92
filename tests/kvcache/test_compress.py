"""Eviction (StreamingLLM, H2O) and quantized (int8, KIVI) caches against naive references."""

from __future__ import annotations

import math

import pytest
import torch

from llmlab.attention import sliding_window_mask
from llmlab.kvcache import (
    ContiguousKVCache,
    HeavyHitterCache,
    QuantizedKVCache,
    SinkWindowCache,
    kivi_quantize,
    pack_codes,
    unpack_codes,
)
from llmlab.nn import StepContext, step_positions
from llmlab.quant.formats import minmax_dequantize as dequantize
from llmlab.quant.formats import minmax_quantize as quantize


def fixed_mask(mask: torch.Tensor) -> StepContext:
    """The uncached reference of a policy: a step context with a given (T, T) mask."""
    return StepContext(step_positions(1, mask.shape[0]), mask[None, None])


def _teacher_forced(model, ids: torch.Tensor, cache) -> torch.Tensor:
    """Logits (seq, vocab) of feeding ``ids`` (1, seq) one token at a time through ``cache``."""
    out = []
    for i in range(ids.shape[1]):
        ctx = cache.prepare(ids[:, i:i + 1])
        out.append(model(ids[:, i:i + 1], ctx)[0])
        cache.commit(ctx)
    return torch.cat(out)


@torch.no_grad()
def test_streaming_llm_equals_sink_window_attention(model, vocab):
    ids = torch.randint(0, vocab, (1, 40), generator=torch.Generator().manual_seed(0))
    got = _teacher_forced(model, ids, SinkWindowCache(model.config.n_layer, n_sink=3, window=8))
    # between steps the cache keeps 3 sinks + 8 recent; the new token adds itself: window 9
    want = model(ids, fixed_mask(sliding_window_mask(40, 40, window=9, n_sink=3)))[0]
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(got, model(ids)[0], atol=1e-3)  # eviction did change the logits


def _h2o_reference(q, k, v, n_heavy, n_recent):
    """H2O by hand for one sequence, one KV head per query head: lists, loops, no tensors ops."""
    T, n_head, d = q.shape
    kept = [[] for _ in range(n_head)]  # per head: token indices kept
    score = [dict() for _ in range(n_head)]  # per head: token -> accumulated attention
    for t in range(T):
        for h in range(n_head):
            keys = kept[h] + [t]
            logits = [float(q[t, h] @ k[j, h]) / math.sqrt(d) for j in keys]
            probs = torch.softmax(torch.tensor(logits), 0).tolist()
            for j, p in zip(keys, probs):
                score[h][j] = score[h].get(j, 0.0) + p
            if len(keys) > n_heavy + n_recent:
                old, recent = keys[:-n_recent], keys[-n_recent:]
                heavy = sorted(old, key=lambda j: -score[h][j])[:n_heavy]
                keys = sorted(heavy) + recent
            kept[h] = keys
    return kept


def test_h2o_keeps_the_heavy_hitters():
    g = torch.Generator().manual_seed(0)
    T, H, d = 30, 2, 8
    q, k = torch.randn(T, H, d, generator=g) * 2, torch.randn(T, H, d, generator=g)
    v = torch.arange(T, dtype=torch.float)[:, None, None].expand(T, H, d)  # v carries the index
    cache = HeavyHitterCache(n_layer=1, n_heavy=4, n_recent=3)
    for t in range(T):  # one step per token, as a one-layer model would run it
        ctx = cache.prepare(torch.zeros(1, 1, dtype=torch.long))
        cache.observe_queries(0, q[None, t:t + 1])
        cache.update(0, k[None, t:t + 1], v[None, t:t + 1])
        cache.commit(ctx)
    kept_v = cache._kept[0][1][0, :, :, 0]  # (kept, head): the token index of each kept value
    want = _h2o_reference(q, k, v, 4, 3)
    assert [kept_v[:, h].long().tolist() for h in range(H)] == want
    assert want[0] != want[1]  # heads keep different tokens


@torch.no_grad()
def test_h2o_without_heavy_hitters_is_a_plain_window(make_model, vocab):
    model = make_model("llama")
    ids = torch.randint(0, vocab, (1, 30), generator=torch.Generator().manual_seed(1))
    n = model.config.n_layer
    h2o = _teacher_forced(model, ids, HeavyHitterCache(n, n_heavy=0, n_recent=6))
    window = _teacher_forced(model, ids, SinkWindowCache(n, n_sink=0, window=6))
    torch.testing.assert_close(h2o, window)


def test_quantize_error_is_within_half_a_step():
    x = torch.randn(4, 16, 2, 8, generator=torch.Generator().manual_seed(0))
    for bits in (8, 4, 2):
        codes, scale, zero = quantize(x, bits, dim=-1)
        assert codes.max() <= 2 ** bits - 1
        err = (dequantize(codes, scale, zero) - x).abs()
        assert bool((err <= scale / 2 + 1e-5).all())
    with pytest.raises(ValueError, match="bits"):
        quantize(x, 9, dim=-1)


def test_pack_unpack_round_trip():
    for bits in (1, 2, 4, 8):
        codes = torch.randint(0, 2 ** bits, (3, 5, 16), dtype=torch.uint8)
        packed = pack_codes(codes, bits)
        assert packed.shape[-1] == 16 * bits // 8
        assert torch.equal(unpack_codes(packed, bits), codes)


def test_kivi_keys_per_channel_beat_per_token_on_outlier_channels():
    """KIVI's observation: key outliers sit in fixed channels, so quantize keys per channel."""
    g = torch.Generator().manual_seed(0)
    k = torch.randn(1, 32, 2, 16, generator=g)
    k[..., 3] += 20 * torch.rand(1, 32, 2, generator=g) + 10  # an outlier channel
    v = torch.randn(1, 32, 2, 16, generator=g)
    k_hat, v_hat = kivi_quantize(k, v, bits=4)
    per_token_k = dequantize(*quantize(k, 4, dim=-1))
    assert (k_hat - k).pow(2).mean() < 0.2 * (per_token_k - k).pow(2).mean()
    torch.testing.assert_close(v_hat, dequantize(*quantize(v, 4, dim=-1)))


def test_kivi_cache_keeps_a_full_precision_residual():
    cache = QuantizedKVCache.kivi(n_layer=1, bits=2, group_size=4)
    g = torch.Generator().manual_seed(0)
    k, v = torch.randn(2, 6, 2, 8, generator=g), torch.randn(2, 6, 2, 8, generator=g)
    ctx = cache.prepare(torch.zeros(2, 6, dtype=torch.long))
    k_all, v_all = cache.update(0, k, v)
    assert cache.nbytes() == 0  # the step is the cache's once committed
    cache.commit(ctx)
    assert torch.equal(k_all[:, 4:], k[:, 4:]) and not torch.equal(k_all[:, :4], k[:, :4])
    k_hat = kivi_quantize(k[:, :4], v[:, :4], bits=2)[0]
    torch.testing.assert_close(k_all[:, :4], k_hat, atol=1e-2, rtol=1e-2)  # fp16 scales
    residual_bytes = 2 * (2 * 2 * 2 * 8 * 4)  # k and v, 2 tokens of fp32
    codes = 2 * (2 * 4 * 2 * 8) // 4  # 4 tokens at 2 bits, k and v
    scales = 2 * 2 * (2 * 1 * 2 * 8) + 2 * 2 * (2 * 4 * 2 * 1)  # fp16 scale+zero, k / v
    assert cache.nbytes() == residual_bytes + codes + scales


@torch.no_grad()
def test_int8_cache_is_close_and_four_times_smaller(model, vocab):
    ids = torch.randint(0, vocab, (2, 24), generator=torch.Generator().manual_seed(2))
    full, q8 = ContiguousKVCache(model.config.n_layer), QuantizedKVCache.int8(model.config.n_layer)
    ref, got = (model(ids, c.prepare(ids)) for c in (full, q8))
    q8.commit(q8._step)
    full.commit(full._step)
    assert 0 < (got - ref).abs().max() < 0.05 * ref.abs().max()
    codes = full.used_bytes() // 4  # fp32 -> one byte per number
    assert q8.nbytes() == codes + codes // model.config.d_head * 4  # + fp16 scale and zero
