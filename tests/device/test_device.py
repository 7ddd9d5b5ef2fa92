"""Device-agnosticism, checked on a CPU-only machine with a fake accelerator.

Every tensor of the model, the Trainer, generation (contiguous and paged caches) and the attention
variants runs on ``FakeDeviceTensor`` (CPU data that reports another device); a tensor built on
the CPU inside one of these paths meets a fake-device tensor and raises ``WrongDevice`` — the
error a GPU run would raise. Results must equal the plain CPU run.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import llmlab.attention as A
from llmlab.kvcache import ContiguousKVCache, PagedKVCache, generate_paged
from llmlab.kvcache.attention import decode_attention, paged_attention
from llmlab.model import GPT, GPTConfig, generate
from llmlab.train import TrainConfig, Trainer, evaluate_loss
from tests.device.fake_device import WrongDevice, fake_device, to_cpu, to_fake

CONFIGS = {
    "llama": GPTConfig.llama_style(vocab_size=61, block_size=32, d_model=32, n_head=4,
                                   n_kv_head=2, n_layer=2),
    "gpt2": GPTConfig.gpt2_style(vocab_size=61, block_size=32, d_model=32, n_head=4, n_layer=2),
}


def _model(name: str) -> GPT:
    torch.manual_seed(0)
    return GPT(CONFIGS[name]).eval()


def _close(got, want, atol=1e-5):
    torch.testing.assert_close(to_cpu(got), want, atol=atol, rtol=1e-4)


def test_the_checker_catches_a_cpu_tensor():
    x = to_fake(torch.randn(3, 4))
    with fake_device(), pytest.raises(WrongDevice):
        _ = x + torch.arange(4)  # built on the CPU: what a GPU run rejects
    with fake_device():
        _close(x + torch.arange(4, device=x.device), to_cpu(x) + torch.arange(4))


@pytest.mark.parametrize("name", list(CONFIGS))
def test_model_forward_backward(name):
    model = _model(name)
    idx = torch.randint(0, 61, (2, 12), generator=torch.Generator().manual_seed(1))
    want = model.loss(idx, idx)
    want.backward()
    grad = model.lm_head.weight.grad.clone()
    model.zero_grad()
    with fake_device():
        to_fake(model)
        loss = model.loss(to_fake(idx), to_fake(idx))
        loss.backward()
    _close(loss, want)
    _close(model.lm_head.weight.grad, grad)


def test_trainer_on_the_model_device():
    tokens = (np.arange(3000) % 61).astype(np.uint16)
    cfg = TrainConfig(max_steps=2, batch_size=2, seq_len=16, warmup_steps=1, precision="fp32",
                      eval_every=0, log_every=1)
    cpu = Trainer(_model("llama"), tokens, tokens, cfg)
    want = [cpu.train_step()["loss"] for _ in range(2)]
    model = _model("llama")
    with fake_device():
        trainer = Trainer(to_fake(model), tokens, tokens, cfg)
        got = [trainer.train_step()["loss"] for _ in range(2)]
        val = evaluate_loss(model, tokens, 2, 16, max_batches=2)
    assert got == pytest.approx(want, rel=1e-4)
    assert val == pytest.approx(evaluate_loss(cpu.model, tokens, 2, 16, max_batches=2), rel=1e-4)


@pytest.mark.parametrize("use_cache", [True, False])
def test_sampling_with_a_cpu_generator(use_cache):
    model = _model("gpt2")
    idx = torch.randint(0, 61, (2, 4), generator=torch.Generator().manual_seed(2))
    kw = dict(max_new_tokens=6, temperature=0.9, top_k=10, top_p=0.9, min_p=0.01,
              repetition_penalty=1.2, frequency_penalty=0.5, logit_bias={4: 1.0},
              eos_token_id=3, use_cache=use_cache)
    want = generate(model, idx, seed=0, **kw)
    with fake_device():
        to_fake(model)
        got = generate(model, to_fake(idx), seed=0, **kw)
    assert torch.equal(to_cpu(got), want)


def test_cached_generation_contiguous_left_padded():
    model = _model("llama")
    idx = torch.randint(1, 61, (2, 6), generator=torch.Generator().manual_seed(3))
    mask = torch.ones_like(idx)
    mask[1, :2] = 0
    want = generate(model, idx, max_new_tokens=5, attention_mask=mask)
    with fake_device():
        to_fake(model)
        got = generate(model, to_fake(idx), max_new_tokens=5, attention_mask=to_fake(mask))
        uncached = generate(model, to_fake(idx), max_new_tokens=5, attention_mask=to_fake(mask),
                            use_cache=False)
    assert torch.equal(to_cpu(got), want) and torch.equal(to_cpu(uncached), want)


def test_cached_generation_paged():
    model = _model("llama")
    prompts = [[5, 6, 7, 8, 9], [10, 11]]
    want = generate_paged(model, prompts, PagedKVCache(2, num_blocks=16, block_size=4),
                          max_new_tokens=5)
    with fake_device():
        to_fake(model)
        got = generate_paged(model, prompts, PagedKVCache(2, num_blocks=16, block_size=4),
                             max_new_tokens=5)
    assert got == want


def _qkv(b=1, h=2, s=16, d=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(b, h, s, d, generator=g) for _ in range(3)]


VARIANTS = {
    "naive": lambda q, k, v: A.naive_attention(q, k, v, causal=True),
    "grouped": lambda q, k, v: A.grouped_attention(q, k[:, :1], v[:, :1], causal=True),
    "sliding": lambda q, k, v: A.sliding_window_attention(q, k, v, window=4, n_sink=1, block=4),
    "sliding_ref": lambda q, k, v: A.sliding_window_reference(q, k, v, window=4, n_sink=1),
    "block_sparse": lambda q, k, v: A.block_sparse_attention(
        q, k, v, A.local_global_layout(4, device=q.device), 4),
    "flash": lambda q, k, v: A.flash_attention(q, k, v, causal=True, block_q=4, block_k=4),
    "flash_decode": lambda q, k, v: A.flash_decode(q[..., -1:, :], k, v, n_splits=3),
    "linear": lambda q, k, v: A.linear_attention_chunked(
        A.elu_feature_map(q), A.elu_feature_map(k), v, chunk=4),
    "alibi": lambda q, k, v: A.naive_attention(
        q, k, v, causal=True, bias=A.alibi_bias(2, 16, device=q.device)),
    "causal": lambda q, k, v: A.causal_attention(q, k, v),
    "fast_causal": lambda q, k, v: A.fast_causal_attention(q, k, v),
}


@pytest.mark.parametrize("name", list(VARIANTS))
def test_attention_variants(name):
    q, k, v = _qkv()
    want = VARIANTS[name](q, k, v)
    with fake_device():
        got = VARIANTS[name](*map(to_fake, (q, k, v)))
    _close(got, want)


def test_flash_backward():
    q, k, v = (t.requires_grad_() for t in _qkv())
    A.flash_attention(q, k, v, causal=True, block_q=4, block_k=4).sum().backward()
    fq, fk, fv = (to_fake(t.detach()).requires_grad_() for t in (q, k, v))
    with fake_device():
        A.flash_attention(fq, fk, fv, causal=True, block_q=4, block_k=4).sum().backward()
    for a, b in ((fq, q), (fk, k), (fv, v)):
        _close(a.grad, b.grad)


def test_layers_mla_nsa_and_sliding_mask():
    torch.manual_seed(0)
    mla = A.MultiHeadLatentAttention(A.MLAConfig(32, 4, kv_lora_rank=12, qk_nope_head_dim=8,
                                                 qk_rope_head_dim=4, v_head_dim=6))
    nsa = A.NativeSparseAttention(d_model=32, n_head=4, n_kv_head=2, block_len=4, stride=2,
                                  select_block=4, n_select=2, n_local=1, window=6)
    model = _model("llama")
    x = torch.randn(2, 12, 32)
    idx = torch.randint(0, 61, (2, 12))
    run = {"mla": lambda m, x, i, c: m(x, c.prepare(i)),
           "nsa": lambda m, x, i, c: m(x),
           "window": lambda m, x, i, c: m(i, A.sliding_window_context(*i.shape, 4, 1, i.device))}
    mods = {"mla": mla, "nsa": nsa, "window": model}
    for name, fn in run.items():
        want = fn(mods[name], x, idx, ContiguousKVCache(1))
        with fake_device():
            to_fake(mods[name])
            got = fn(mods[name], to_fake(x), to_fake(idx), ContiguousKVCache(1))
        _close(got, want)


def test_decode_and_paged_attention():
    g = torch.Generator().manual_seed(0)
    q = torch.randn(2, 4, 8, generator=g)
    pool_k, pool_v = torch.randn(2, 6, 3, 2, 8, generator=g)  # (blocks, size, kv heads, d)
    tables, lengths = torch.tensor([[0, 2], [4, 1]]), torch.tensor([5, 3])
    want = paged_attention(q, pool_k, pool_v, tables, lengths)
    k = pool_k[tables].flatten(1, 2)
    want_dec = decode_attention(q, k, pool_v[tables].flatten(1, 2), lengths)
    with fake_device():
        got = paged_attention(*map(to_fake, (q, pool_k, pool_v, tables, lengths)))
        got_dec = decode_attention(*map(to_fake, (q, k, pool_v[tables].flatten(1, 2), lengths)))
    _close(got, want)
    _close(got_dec, want_dec)
    _close(got, want_dec)
