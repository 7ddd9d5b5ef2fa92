"""Multi-LoRA serving: rows of one batch on different adapters equal each adapter served alone."""

from __future__ import annotations

import copy

import openai
import pytest

from llmlab import peft
from llmlab.serve import EngineConfig, LLMEngine, SamplingParams
from llmlab.serve.server import create_app, serve_in_thread
from tests.peft.conftest import randomize

PROMPTS = ["def main():\n", "import os\n", "class Stack:\n    def push(self, x):\n"]
GREEDY = SamplingParams(max_new_tokens=12, temperature=0, ignore_eos=True)


@pytest.fixture(scope="module")
def adapters(book):
    """Two LoRA models of the book's model (chapter 05) with random, output-changing weights."""
    model, _ = book
    out = {}
    for seed, (name, targets) in enumerate([("sql", ("q_proj", "v_proj")),
                                            ("poem", ("v_proj", "down_proj"))]):
        lora = peft.apply_lora(copy.deepcopy(model), peft.LoRAConfig(r=4, alpha=8,
                                                                     target_modules=targets))
        randomize(lora, seed=seed, std=0.3)  # only the adapters are trainable
        out[name] = lora.eval()
    return out


def _engine(book, adapters) -> LLMEngine:
    model, tok = book
    engine = LLMEngine(copy.deepcopy(model), tok, EngineConfig(num_blocks=64, max_num_seqs=8,
                                                               block_size=4))
    engine.load_adapters({n: peft.adapter_state_dict(m) for n, m in adapters.items()},
                         {n: 2.0 for n in adapters})
    return engine


def _alone(model, tok, prompt) -> list[int]:
    return LLMEngine(model, tok, EngineConfig(num_blocks=64)).generate([prompt], GREEDY)[0].seq.output


def test_one_batch_many_adapters_equals_each_alone(book, adapters):
    model, tok = book
    engine = _engine(book, adapters)
    plan = [(p, a) for p in PROMPTS for a in (None, "sql", "poem")]  # 9 rows, 3 adapters mixed
    ids = [engine.add_request(p, GREEDY, adapter=a) for p, a in plan]
    reqs = [engine.requests[i] for i in ids]
    mixed = 0
    while engine.has_unfinished():
        engine.step()
        rows = engine.last_batch.rows if engine.last_batch else []
        mixed += len({reqs[ids.index(s.seq_id)].adapter for s, _ in rows}) > 1
    assert mixed > 0  # some forwards really mixed adapters
    for (p, a), r in zip(plan, reqs):
        assert r.seq.output == _alone(model if a is None else adapters[a], tok, p), (p, a)
    outs = {a: r.seq.output for (p, a), r in zip(plan, reqs) if p == PROMPTS[0]}
    assert len({tuple(o) for o in outs.values()}) == 3  # the adapters do change the output


def test_prefix_cache_is_keyed_by_adapter(book, adapters):
    model, tok = book
    engine = _engine(book, adapters)
    prompt = PROMPTS[2]  # 4-token blocks: its prompt fills cacheable blocks
    first = engine.generate([prompt], GREEDY)[0]  # the base model's blocks enter the cache
    rid = engine.add_request(prompt, GREEDY, adapter="sql")
    req = engine.requests[rid]
    while engine.has_unfinished():
        engine.step()
    assert req.seq.num_cached == 0  # the base model's keys/values are not the adapter's
    assert req.seq.output == _alone(adapters["sql"], tok, prompt) != first.seq.output
    again = engine.generate([prompt], GREEDY)[0]
    assert again.seq.num_cached > 0 and again.seq.output == first.seq.output
    with pytest.raises(ValueError, match="unknown adapter"):
        engine.add_request(prompt, GREEDY, adapter="nope")
    with pytest.raises(ValueError, match="once"):
        engine.load_adapters({"x": {}}, {"x": 1.0})


def test_openai_model_field_picks_the_adapter(book, adapters):
    _, tok = book
    engine = _engine(book, adapters)
    with serve_in_thread(create_app(engine)) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="none", max_retries=0)
        names = {m.id for m in client.models.list().data}
        assert names == {"book", "book:poem", "book:sql"}
        kw = dict(prompt=PROMPTS[1], max_tokens=12, temperature=0,
                  extra_body={"ignore_eos": True})
        for model in ("book:sql", "poem"):
            out = client.completions.create(model=model, **kw)
            assert out.model == model
            want = _alone(adapters[model.removeprefix("book:")], tok, PROMPTS[1])
            assert out.choices[0].text == tok.decode(want)
        with pytest.raises(openai.NotFoundError):
            client.completions.create(model="book:nope", **kw)
