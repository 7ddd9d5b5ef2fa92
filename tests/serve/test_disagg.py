"""Prefill in one process, decode in another: outputs equal solo greedy decoding."""

import torch

from llmlab.kvcache import PagedKVCache
from llmlab.model import generate
from llmlab.serve import EngineConfig, LLMEngine, SamplingParams, disaggregated_generate


def test_export_import_round_trip():
    cache = PagedKVCache(2, 8, 4)
    cache.add_sequence("a", list(range(10)))
    ctx = cache.prepare(["a"], tokens=[list(range(10))])
    kv = [torch.randn(1, 10, 1, 2) for _ in range(2)]
    for layer in range(2):
        ctx.cache.update(layer, kv[layer], -kv[layer])
    cache.commit(ctx)
    tokens, exported = cache.export_blocks("a")
    assert tokens == list(range(8)) and exported[1][0].shape == (8, 1, 2)
    torch.testing.assert_close(exported[1][1], -kv[1][0, :8])
    other = PagedKVCache(2, 8, 4, prefix_caching=True)
    assert other.import_blocks(tokens, exported) == 2
    assert other.add_sequence("b", list(range(10))) == 8  # found as a prefix hit
    assert torch.equal(other.pool_view(1)[0][other.tables["b"][1]], exported[1][0][4:8])


def test_disaggregated_outputs_equal_solo(book):
    model, tok = book
    prompts = [tok.encode(t) for t in ["def fibonacci(n):\n    if n < 2:\n        return n\n",
                                       "import os\nimport sys\n\n\ndef main():\n", "x"]]
    engine = LLMEngine(model, tok, EngineConfig(block_size=8))
    done, stats = disaggregated_generate(engine, prompts, SamplingParams(max_new_tokens=12,
                                                                         temperature=0))
    for p, r in zip(prompts, done):
        solo = generate(model, torch.tensor([p]), max_new_tokens=12)[0, len(p):].tolist()
        assert r.seq.output == solo[:len(r.seq.output)] and r.finish_reason
    assert stats.blocks == sum(len(p) // 8 for p in prompts) > 0
    assert stats.decode_prompt_tokens < stats.prompt_tokens
    assert all(len(p) - r.seq.num_cached <= 8 for p, r in zip(prompts, done))
    assert stats.bytes > 0 and stats.transfer_seconds() > 0
