"""``torch.compile(model, fullgraph=True)``: no graph break in forward + backward of the GPT-2
and Llama configs (and Llama with the Qwen/Llama 3.1 options), nor in a KV-cached decode step,
and the compiled model computes what the eager one does. Tiny sizes and the aot_eager backend
(the graph capture is what is tested; inductor code generation takes minutes on 2 cores), so the
tests are few."""

from __future__ import annotations

import pytest
import torch

from llmlab.kvcache import ContiguousKVCache
from llmlab.model import GPT, GPTConfig

pytestmark = pytest.mark.compile

CONFIGS = {
    "llama": GPTConfig.llama_style(vocab_size=61, block_size=32, d_model=32, n_head=4,
                                   n_kv_head=2, n_layer=2),
    "gpt2": GPTConfig.gpt2_style(vocab_size=61, block_size=32, d_model=32, n_head=4, n_layer=2),
    "qwen_options": GPTConfig.llama_style(  # Qwen2's q/k/v biases, Qwen3's q/k norm, Llama 3.1 RoPE
        vocab_size=61, block_size=32, d_model=32, n_head=4, n_kv_head=2, n_layer=2,
        qkv_bias=True, qk_norm=True,
        rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                      "high_freq_factor": 4.0, "original_max_position_embeddings": 16}),
}


@pytest.fixture(autouse=True)
def fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


@pytest.mark.parametrize("name", list(CONFIGS))
def test_fullgraph_forward_backward(name):
    torch.manual_seed(0)
    model = GPT(CONFIGS[name])
    idx = torch.randint(0, 61, (2, 16), generator=torch.Generator().manual_seed(0))
    want = model.loss(idx, idx)
    want.backward()
    want_grad = model.tok_emb.weight.grad.clone()
    model.zero_grad()
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")  # raises on a break
    logits = compiled(idx)
    loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), idx.flatten())
    loss.backward()
    torch.testing.assert_close(loss, want, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(model.tok_emb.weight.grad, want_grad, atol=1e-5, rtol=1e-4)


def test_fullgraph_decode_step():
    torch.manual_seed(0)
    model = GPT(CONFIGS["llama"]).eval()
    prompt = torch.randint(0, 61, (2, 8), generator=torch.Generator().manual_seed(1))
    eager_cache, cache = ContiguousKVCache(2, 16), ContiguousKVCache(2, 16)
    with torch.no_grad():
        for c in (eager_cache, cache):
            ctx = c.prepare(prompt)
            model(prompt, ctx)
            c.commit(ctx)
        step = torch.compile(model, fullgraph=True, backend="aot_eager")
        tok = prompt[:, -1:]
        want_ctx, ctx = eager_cache.prepare(tok), cache.prepare(tok)  # outside the graph
        want = model(tok, want_ctx)
        got = step(tok, ctx)  # positions, cache update and attention in one graph
        eager_cache.commit(want_ctx)
        cache.commit(ctx)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    assert cache.offset == eager_cache.offset == 9

