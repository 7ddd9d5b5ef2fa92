"""Cached greedy generation = uncached, token for token; and = transformers ``generate``."""

from __future__ import annotations

import pytest
import torch

from llmlab.model import ContiguousKVCache, SamplingParams, generate


def test_cached_equals_uncached(model, vocab):
    idx = torch.randint(0, vocab, (3, 8), generator=torch.Generator().manual_seed(0))
    cached = generate(model, idx, max_new_tokens=40)
    uncached = generate(model, idx, max_new_tokens=40, use_cache=False)
    assert cached.shape == (3, 48)
    assert torch.equal(cached, uncached)


def test_cached_equals_uncached_left_padded(model, ragged_prompts, pad_left):
    ids, mask = pad_left(ragged_prompts)
    cached = generate(model, ids, max_new_tokens=30, attention_mask=mask)
    uncached = generate(model, ids, max_new_tokens=30, attention_mask=mask, use_cache=False)
    assert torch.equal(cached, uncached)
    for row, prompt in enumerate(ragged_prompts):  # padding changes nothing for a row
        alone = generate(model, torch.tensor([prompt]), max_new_tokens=30)
        assert torch.equal(alone[0, len(prompt):], cached[row, ids.shape[1]:])


@pytest.mark.parametrize("n_kv_head", [4, 1])  # MHA and MQA
def test_cached_equals_uncached_mha_mqa(n_kv_head, make_model, vocab):
    model = make_model("llama", n_kv_head=n_kv_head)
    idx = torch.randint(0, vocab, (2, 5))
    assert torch.equal(generate(model, idx, max_new_tokens=25),
                       generate(model, idx, max_new_tokens=25, use_cache=False))


def test_sampling_same_stream_cached_and_uncached(model, vocab):
    idx = torch.randint(0, vocab, (2, 4))
    runs = [generate(model, idx, max_new_tokens=20, use_cache=c, temperature=0.8, top_k=20,
                     generator=torch.Generator().manual_seed(3)) for c in (True, False)]
    assert torch.equal(*runs)


def test_cache_grows_past_its_capacity(model, vocab):
    idx = torch.randint(0, vocab, (1, 3))
    small = ContiguousKVCache(model.config.n_layer, capacity=2)
    assert torch.equal(generate(model, idx, max_new_tokens=30, cache=small),
                       generate(model, idx, max_new_tokens=30))
    assert small.offset == 3 + 29  # the last sampled token is never fed back


def test_eos_stops_and_pads(model, vocab):
    idx = torch.randint(0, vocab, (2, 4), generator=torch.Generator().manual_seed(5))
    free = generate(model, idx, max_new_tokens=12)[:, 4:].tolist()
    eos = free[0][0]  # row 0 stops at once
    out = generate(model, idx, max_new_tokens=12, eos_token_id=eos, pad_token_id=vocab - 1)[:, 4:].tolist()
    assert out[0] == [eos] + [vocab - 1] * (len(out[0]) - 1)
    stop = free[1].index(eos) + 1 if eos in free[1] else 12
    assert len(out[1]) == stop and out[1] == free[1][:stop]  # ends when the last row ends


def test_bad_sampling_parameters_are_named(model, vocab):
    idx = torch.randint(0, vocab, (1, 3))
    with pytest.raises(ValueError, match="temperature"):
        generate(model, idx, temperature=-0.5)
    with pytest.raises(ValueError, match="top_q"):
        generate(model, idx, top_q=0.9)  # not a sampling parameter
    with pytest.raises(ValueError, match="max_new_tokens=5"):
        generate(model, idx, 5)  # the third argument is a SamplingParams
    with pytest.raises(ValueError, match="serving engine"):
        generate(model, idx, SamplingParams(stop=["\n"]))


# ------------------------------------------------------------------ parity with transformers
def _hf_models(vocab: int):
    transformers = pytest.importorskip("transformers")
    gpt2 = transformers.GPT2Config(vocab_size=vocab, n_positions=128, n_embd=64, n_layer=2,
                                   n_head=4, bos_token_id=0, eos_token_id=vocab - 1)
    llama = transformers.LlamaConfig(vocab_size=vocab, hidden_size=64, intermediate_size=128,
                                     num_hidden_layers=2, num_attention_heads=4,
                                     num_key_value_heads=2, max_position_embeddings=128,
                                     bos_token_id=0, eos_token_id=vocab - 1, pad_token_id=0)
    return {"gpt2": (transformers.GPT2LMHeadModel, gpt2),
            "llama": (transformers.LlamaForCausalLM, llama)}


@pytest.mark.parity
@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_greedy_equals_transformers_generate(arch, ragged_prompts, pad_left, vocab):
    cls, cfg = _hf_models(vocab)[arch]
    from llmlab.model.hf import from_hf

    torch.manual_seed(0)
    hf = cls(cfg).eval()
    ours = from_hf(hf).eval()
    ids, mask = pad_left(ragged_prompts)
    with torch.no_grad():
        theirs = hf.generate(ids, attention_mask=mask, max_new_tokens=24, do_sample=False,
                             pad_token_id=0, eos_token_id=None)
    mine = generate(ours, ids, max_new_tokens=24, attention_mask=mask)
    assert torch.equal(mine, theirs)


def test_mla_caches_only_the_latent(make_model, vocab):
    model = make_model("llama", attention="mla")
    idx = torch.randint(0, vocab, (2, 6), generator=torch.Generator().manual_seed(2))
    cache = ContiguousKVCache(model.config.n_layer)
    cached = generate(model, idx, max_new_tokens=20, cache=cache)
    assert torch.equal(cached, generate(model, idx, max_new_tokens=20, use_cache=False))
    c_kv, k_rope = cache.tensors(0)  # what one layer stores: latent and shared RoPE key
    spec = model.blocks[0].attn.config
    assert c_kv.shape[2:] == (spec.kv_lora_rank,) and k_rope.shape[2:] == (spec.qk_rope_head_dim,)


def test_padded_batch_rejects_a_cache_blind_to_padding(model, ragged_prompts, pad_left):
    ids, mask = pad_left(ragged_prompts)
    with pytest.raises(ValueError, match="masks the padding"):
        generate(model, ids, max_new_tokens=3, attention_mask=mask, cache=ContiguousKVCache(2))
    cache = ContiguousKVCache(2, key_valid=mask.bool())
    assert torch.equal(generate(model, ids, max_new_tokens=5, attention_mask=mask, cache=cache),
                       generate(model, ids, max_new_tokens=5, attention_mask=mask))


SAMPLING = [dict(temperature=1.2, top_k=20), dict(temperature=0.9, top_p=0.8, min_p=0.05),
            dict(temperature=0.7, top_k=30, top_p=0.9, min_p=0.02, repetition_penalty=1.3)]


@pytest.mark.parity
@pytest.mark.parametrize("arch", ["gpt2", "llama"])
@pytest.mark.parametrize("sampling", SAMPLING, ids=lambda s: "-".join(s))
def test_seeded_sampling_equals_transformers_generate(arch, sampling, ragged_prompts, pad_left,
                                                      vocab):
    """The same seed and filters draw the same tokens as ``transformers``' ``generate``: the
    pipeline (order temperature, top-k, top-p, min-p; the repetition penalty before them) and
    the draw (one multinomial over the batch) are theirs."""
    cls, cfg = _hf_models(vocab)[arch]
    from llmlab.model.hf import from_hf

    torch.manual_seed(0)
    hf = cls(cfg).eval()
    ours = from_hf(hf).eval()
    if "repetition_penalty" in sampling:  # transformers also penalizes the padding token
        ids = torch.randint(1, vocab, (3, 7), generator=torch.Generator().manual_seed(4))
        mask = torch.ones_like(ids)
    else:
        ids, mask = pad_left(ragged_prompts)
    hf_kw = dict(top_k=0, top_p=1.0, min_p=None, repetition_penalty=1.0) | sampling
    torch.manual_seed(11)
    with torch.no_grad():
        theirs = hf.generate(ids, attention_mask=mask, max_new_tokens=20, do_sample=True,
                             pad_token_id=0, eos_token_id=None, **hf_kw)
    mine = generate(ours, ids, max_new_tokens=20, attention_mask=mask, seed=11, **sampling)
    assert torch.equal(mine, theirs)
