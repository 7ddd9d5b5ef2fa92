import re

import pytest
import torch

from llmlab.model import generate
from llmlab.serve import EngineConfig, LLMEngine, PromptTooLongError, SamplingParams

PROMPTS = ["def fibonacci(n):\n    ", "import os\n", "class Foo:\n    def __init__(self",
           "# Copyright 2001 Python Software Foundation\n" * 3, "x"]


@pytest.fixture(scope="module")
def solo(book):
    model, tok = book
    return {p: generate(model, torch.tensor([tok.encode(p)]),
                        max_new_tokens=24)[0, len(tok.encode(p)):].tolist()
            for p in PROMPTS}


@pytest.mark.parametrize("order,cfg", [
    ([0, 1, 2, 3, 4], dict(num_blocks=64, block_size=8, max_num_batched_tokens=64)),
    ([3, 1, 4, 0, 2], dict(num_blocks=64, block_size=8, max_num_batched_tokens=8)),  # chunked
    ([4, 3, 2, 1, 0], dict(num_blocks=20, block_size=4, max_num_batched_tokens=16)),  # preempts
])
def test_greedy_equals_solo_whatever_the_batch(book, solo, order, cfg):
    model, tok = book
    engine = LLMEngine(model, tok, EngineConfig(max_num_seqs=4, **cfg))
    prompts = [PROMPTS[i] for i in order]
    reqs = engine.generate(prompts, SamplingParams(max_new_tokens=24, temperature=0, ignore_eos=True))
    for p, r in zip(prompts, reqs):
        assert r.seq.output == solo[p], p
        assert r.text == tok.decode(r.seq.output)
    if cfg["num_blocks"] == 20:
        assert sum(r.seq.num_preemptions for r in reqs) > 0
    assert engine.cache.used_blocks() == 0  # every block came back


def test_requests_arriving_mid_flight(book, solo):
    model, tok = book
    engine = LLMEngine(model, tok, EngineConfig(num_blocks=64, block_size=8))
    params = SamplingParams(max_new_tokens=24, temperature=0, ignore_eos=True)
    ids = {}
    for p in PROMPTS:  # a new request joins every two steps (continuous batching)
        ids[engine.add_request(p, params)] = p
        engine.step()
        engine.step()
    done = {}
    while engine.has_unfinished():
        for out in engine.step():
            done.setdefault(out.request_id, []).extend(out.token_ids)
    for rid, p in ids.items():
        assert solo[p][-len(done[rid]):] == done[rid]


def test_prefix_cache_hit_gives_same_output(book, solo):
    model, tok = book
    engine = LLMEngine(model, tok, EngineConfig(num_blocks=64, block_size=4))
    p = PROMPTS[3]
    a = engine.generate([p], SamplingParams(max_new_tokens=24, temperature=0, ignore_eos=True))[0]
    b = engine.generate([p], SamplingParams(max_new_tokens=24, temperature=0, ignore_eos=True))[0]
    assert b.seq.num_cached > 0 and a.seq.output == b.seq.output == solo[p]


def test_seeded_sampling_does_not_depend_on_the_batch(book):
    model, tok = book
    p = SamplingParams(max_new_tokens=12, temperature=1.0, top_p=0.9, seed=5)
    alone = LLMEngine(model, tok).generate([PROMPTS[0]], p)[0].seq.output
    mixed = LLMEngine(model, tok).generate(PROMPTS[:3], p)[0].seq.output
    assert alone == mixed


def test_stop_string_and_logprobs(book, solo):
    model, tok = book
    full = tok.decode(solo[PROMPTS[2]])
    stop = full[8:11]
    engine = LLMEngine(model, tok)
    r = engine.generate([PROMPTS[2]], SamplingParams(max_new_tokens=24, temperature=0, stop=[stop],
                                                     logprobs=2))[0]
    assert r.finish_reason == "stop" and r.text == full[:full.index(stop)]
    assert len(r.logprobs) == len(r.seq.output)
    token, lp, top = r.logprobs[0]
    assert token == solo[PROMPTS[2]][0] and max(top.values()) == pytest.approx(lp)


def test_constrained_outputs_always_parse(book):
    model, tok = book
    engine = LLMEngine(model, tok)
    pattern = r'\{"id": \d{1,3}, "ok": (true|false)\}'
    reqs = engine.generate(["data = "] * 6, SamplingParams(max_new_tokens=40, temperature=1.0,
                                                           seed=1, regex=pattern))
    for r in reqs:
        assert re.fullmatch(pattern, r.text), r.text


def test_bad_requests_are_refused(book):
    model, tok = book
    engine = LLMEngine(model, tok, EngineConfig(num_blocks=4, block_size=4))
    with pytest.raises(PromptTooLongError):
        engine.add_request("x " * 300)
    with pytest.raises(PromptTooLongError):
        engine.add_request("x", SamplingParams(max_new_tokens=64))  # needs more blocks than exist
    with pytest.raises(ValueError, match="top_p"):
        engine.add_request("x", SamplingParams(top_p=2))
    rid = engine.add_request("def f():", SamplingParams(max_new_tokens=8))
    engine.step()
    assert engine.cache.used_blocks() > 0
    engine.abort(rid)
    assert engine.cache.used_blocks() == 0 and not engine.has_unfinished()
