"""The GPT module: shapes, causality, positions, the step context and its KV-cache protocol,
init, counting, I/O."""

import math

import pytest
import torch

from llmlab.model import GPT, GPTConfig, filter_logits, generate
from llmlab.model.counting import (
    flops_per_token,
    memory_estimate,
    param_count,
    saved_activation_bytes,
    training_flops,
)
from llmlab.model.io import load_model, save_model
from llmlab.nn import KVCache, StepContext, step_positions

CONFIGS = {
    "llama_gqa": GPTConfig.llama_style(vocab_size=61, block_size=32, d_model=32, n_head=4,
                                       n_kv_head=2, n_layer=2),
    "gpt2": GPTConfig.gpt2_style(vocab_size=61, block_size=32, d_model=32, n_head=4, n_layer=2),
}


class ListCache:
    """The KV-cache protocol (llmlab.nn.context) at its simplest: concatenate, no commit needed."""

    def __init__(self):
        self.layers: dict[int, tuple[torch.Tensor, ...]] = {}
        self.offset = 0
        self.queries: dict[int, torch.Tensor] = {}

    def observe_queries(self, layer_idx, q):
        self.queries[layer_idx] = q

    def update(self, layer_idx, *new):
        old = self.layers.get(layer_idx)
        full = new if old is None else tuple(torch.cat(p, dim=1) for p in zip(old, new))
        self.layers[layer_idx] = full
        return full

    def step(self, idx):
        """A step context after the cached tokens (and then count them)."""
        ctx = StepContext(step_positions(*idx.shape, start=self.offset), cache=self)
        self.offset += idx.shape[1]
        return ctx


@pytest.fixture(params=sorted(CONFIGS))
def model(request):
    torch.manual_seed(0)
    return GPT(CONFIGS[request.param]).eval()


def test_logits_shape_and_causality(model):
    idx = torch.randint(0, 61, (3, 12))
    logits = model(idx)
    assert logits.shape == (3, 12, 61)
    idx2 = idx.clone()
    idx2[:, 8:] = (idx2[:, 8:] + 1) % 61
    torch.testing.assert_close(model(idx2)[:, :8], logits[:, :8])
    assert not torch.allclose(model(idx2)[:, 8:], logits[:, 8:])


def test_explicit_positions_equal_default(model):
    idx = torch.randint(0, 61, (2, 10))
    pos = torch.arange(10).expand(2, 10)
    torch.testing.assert_close(model(idx, StepContext(pos)), model(idx))
    shifted = model(idx, StepContext(pos + 3))
    if model.config.position == "rope":  # RoPE only sees relative positions
        torch.testing.assert_close(shifted, model(idx), atol=1e-5, rtol=1e-4)
    else:
        assert not torch.allclose(shifted, model(idx))
    scrambled = pos.flip(-1)  # positions do matter for both
    assert not torch.allclose(model(idx, StepContext(scrambled)), model(idx))
    with pytest.raises(ValueError, match="positions must be"):
        model(idx, StepContext(pos[:, :5]))
    with pytest.raises(ValueError, match="logits_at"):
        model(idx, StepContext(pos, logits_at=torch.tensor([1])))


def test_logits_at_picks_one_column_per_row(model):
    idx = torch.randint(0, 61, (3, 7))
    at = torch.tensor([6, 0, 3])
    got = model(idx, StepContext(step_positions(3, 7), logits_at=at))
    torch.testing.assert_close(got, model(idx)[torch.arange(3), at], atol=1e-5, rtol=1e-4)


def test_a_mask_in_the_context_reaches_every_layer(model):
    idx = torch.randint(0, 61, (1, 6))
    eye = torch.eye(6, dtype=torch.bool)[None, None]  # each token sees only itself
    alone = torch.cat([model(idx[:, t:t + 1], StepContext(torch.tensor([[t]])))
                       for t in range(6)], 1)
    torch.testing.assert_close(model(idx, StepContext(step_positions(1, 6), eye)), alone,
                               atol=1e-5, rtol=1e-4)


def test_kv_cache_hook_gives_the_full_forward(model):
    idx = torch.randint(0, 61, (2, 11))
    full = model(idx)
    cache = ListCache()
    assert isinstance(cache, KVCache)  # the protocol: everything the attention layers call
    chunks = [model(idx[:, :6], cache.step(idx[:, :6]))]
    for t in range(6, 11):
        chunks.append(model(idx[:, t:t + 1], cache.step(idx[:, t:t + 1])))
    torch.testing.assert_close(torch.cat(chunks, 1), full, atol=1e-5, rtol=1e-4)
    k, v = cache.layers[0]
    assert k.shape == (2, 11, model.config.n_kv_head, model.config.d_head)  # seq on dim 1
    assert cache.queries[1].shape == (2, 1, model.config.n_head, model.config.d_head)


def test_chunked_prefill_through_cache(model):
    idx = torch.randint(0, 61, (1, 9))
    cache = ListCache()
    a = model(idx[:, :4], cache.step(idx[:, :4]))
    b = model(idx[:, 4:], cache.step(idx[:, 4:]))  # 5 new tokens: 4 cached + causal among them
    torch.testing.assert_close(torch.cat((a, b), 1), model(idx), atol=1e-5, rtol=1e-4)


def test_bad_inputs():
    m = GPT(CONFIGS["gpt2"])
    with pytest.raises(ValueError, match="block_size"):
        m(torch.zeros(1, 33, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\(batch, seq\)"):
        m(torch.zeros(5, dtype=torch.long))
    with pytest.raises(ValueError, match="GPTConfig"):
        GPT({"n_layer": 2})


def test_scaled_residual_init():
    c = GPTConfig.llama_style(vocab_size=512, d_model=256, n_head=4, n_layer=8)
    m = GPT(c)
    std = lambda p: p.detach().std().item()  # noqa: E731
    assert abs(std(m.blocks[0].attn.q_proj.weight) - 0.02) < 0.002
    expected = 0.02 / math.sqrt(2 * 8)
    assert abs(std(m.blocks[3].attn.o_proj.weight) - expected) < 0.001
    assert abs(std(m.blocks[3].mlp.down_proj.weight) - expected) < 0.001
    assert m.lm_head.weight is m.tok_emb.weight
    assert torch.equal(m.blocks[0].norm1.weight, torch.ones(256))


@pytest.mark.parametrize("name", sorted(CONFIGS) + ["untied"])
def test_param_count_matches_model(name):
    c = CONFIGS.get(name) or CONFIGS["llama_gqa"].replace(tie_embeddings=False)
    m = GPT(c)
    counts = param_count(c)
    assert counts["total"] == m.num_params() == sum(p.numel() for p in m.parameters())
    assert counts["non_embedding"] == m.num_params(non_embedding=True)


def test_flops_rule():
    c = CONFIGS["llama_gqa"]
    assert training_flops(1000, 50) == 300000
    n = param_count(c)
    # 6 FLOPs per matmul weight per token (LM head included even when tied), plus attention
    n_matmul = n["attention"] + n["mlp"] + c.vocab_size * c.d_model
    assert flops_per_token(c, seq_len=1) == pytest.approx(6 * n_matmul + 12 * c.n_layer * 32)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_activation_estimate_matches_measured_saved_tensors(name):
    c = CONFIGS[name].replace(vocab_size=300, d_model=64, n_layer=3)
    m = GPT(c)
    idx = torch.randint(0, 300, (4, 32))
    measured = saved_activation_bytes(m, idx, idx)
    est = memory_estimate(c, batch_size=4, seq_len=32)
    assert est["activations"] == pytest.approx(measured, rel=0.03)
    assert est["optimizer"] == 2 * est["weights"]
    assert est["total"] == pytest.approx(sum(v for k, v in est.items() if k != "total"))


def test_save_load_round_trip(tmp_path, model):
    save_model(model, tmp_path)
    back = load_model(tmp_path)
    idx = torch.randint(0, 61, (2, 7))
    torch.testing.assert_close(back(idx), model(idx))
    if back.config.tie_embeddings:
        assert back.lm_head.weight is back.tok_emb.weight


def test_generate_greedy_and_filters(model):
    idx = torch.randint(0, 61, (2, 3))
    out = generate(model, idx, max_new_tokens=5, temperature=0, use_cache=False)
    assert out.shape == (2, 8) and torch.equal(out[:, :3], idx)
    step = model(out[:, :-1])[:, -1].argmax(-1)
    assert torch.equal(out[:, -1], step)
    g = torch.Generator().manual_seed(0)
    s1 = generate(model, idx, max_new_tokens=4, temperature=1.0, top_k=5, generator=g)
    s2 = generate(model, idx, max_new_tokens=4, temperature=1.0, top_k=5, seed=0)
    assert torch.equal(s1, s2)


def test_filter_logits():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    assert torch.isinf(filter_logits(logits, top_k=2)[0, 2:]).all()
    kept = ~torch.isinf(filter_logits(logits, top_p=0.7))
    assert kept.tolist() == [[True, True, False, False]]  # 0.5 < 0.7 <= 0.8
    assert (~torch.isinf(filter_logits(logits, top_p=0.5))).sum() == 1
