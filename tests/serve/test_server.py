"""The HTTP server with the official openai client, on 127.0.0.1 only, every call time-bounded."""

import concurrent.futures as cf
import signal
import time

import httpx
import openai
import pytest

from llmlab.serve import EngineConfig, LLMEngine, SamplingParams, load_test
from llmlab.serve.server import create_app, serve_in_thread


@pytest.fixture(scope="module")
def server(book):
    model, tok = book
    engine = LLMEngine(model, tok, EngineConfig(num_blocks=64, block_size=8))
    with serve_in_thread(create_app(engine)) as url:
        yield url, engine


@pytest.fixture
def client(server):
    return openai.OpenAI(base_url=server[0] + "/v1", api_key="none", max_retries=0, timeout=30)


def test_models_health_and_completion(server, client):
    assert [m.id for m in client.models.list().data] == ["book"]
    assert httpx.get(server[0] + "/health", timeout=5).json() == {"status": "ok"}
    engine = server[1]
    r = client.completions.create(model="book", prompt="def f(x):\n", max_tokens=12,
                                  temperature=0, logprobs=1)
    assert r.choices[0].finish_reason in ("length", "stop") and r.usage.completion_tokens <= 12
    assert len(r.choices[0].logprobs.token_logprobs) == r.usage.completion_tokens
    plain = LLMEngine(engine.model, engine.tokenizer)  # the same request in-process
    want = plain.generate(["def f(x):\n"], SamplingParams(max_new_tokens=12, temperature=0))[0].text
    assert r.choices[0].text == want


def test_streaming_equals_non_streaming(client):
    kw = dict(model="book", prompt="import sys\n", max_tokens=16, temperature=0)
    whole = client.completions.create(**kw).choices[0].text
    chunks = list(client.completions.create(stream=True, **kw))
    assert "".join(c.choices[0].text for c in chunks) == whole
    assert chunks[-1].choices[0].finish_reason == "length"


def test_chat_streaming_and_not(client):
    msgs = [{"role": "system", "content": "You write Python."}, {"role": "user", "content": "hi"}]
    r = client.chat.completions.create(model="book", messages=msgs, max_tokens=10, temperature=0)
    assert r.choices[0].message.role == "assistant"
    chunks = list(client.chat.completions.create(model="book", messages=msgs, max_tokens=10,
                                                 temperature=0, stream=True))
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert text == r.choices[0].message.content


def test_concurrent_clients_get_their_own_answers(client):
    prompts = ["class A:\n", "import os\n", "def g():\n", "# x\n"] * 2
    kw = dict(model="book", max_tokens=10, temperature=0)
    alone = {p: client.completions.create(prompt=p, **kw).choices[0].text for p in set(prompts)}
    with cf.ThreadPoolExecutor(8) as pool:
        got = list(pool.map(lambda p: client.completions.create(prompt=p, **kw), prompts))
    assert [g.choices[0].text for g in got] == [alone[p] for p in prompts]


def test_disconnect_mid_stream_frees_kv_blocks(server):
    url, engine = server
    body = {"model": "book", "prompt": "def main():\n", "max_tokens": 200, "stream": True,
            "ignore_eos": True}
    with httpx.Client(timeout=10) as c, c.stream("POST", url + "/v1/completions", json=body) as r:
        for i, _ in enumerate(r.iter_lines()):
            if i > 6:
                break
        assert engine.stats()["running"] == 1
    deadline = time.monotonic() + 10
    while engine.stats()["running"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert engine.stats()["running"] == 0 and engine.cache.used_blocks() == 0


@pytest.mark.parametrize("body,status,param", [
    ("{not json", 400, None),
    ('{"model": "gpt-4", "prompt": "x"}', 404, "model"),
    ('{"model": "book", "prompt": "' + "x " * 2000 + '"}', 400, "prompt"),  # past the context
    ('{"model": "book", "prompt": "x", "temperature": -1}', 400, "temperature"),
    ('{"model": "book", "prompt": "x", "top_p": "high"}', 400, "top_p"),
    ('{"model": "book", "prompt": "x", "max_tokens": 0}', 400, "max_tokens"),
    ('{"model": "book", "prompt": "x", "logit_bias": {"99999": 1}}', 400, "logit_bias"),
    ('{"model": "book", "prompt": "x", "guided_regex": "(ab"}', 400, "regex"),
    ('{"model": "book"}', 400, "prompt"),
    ('[1, 2]', 400, None),
])
def test_bad_requests_get_openai_errors(server, body, status, param):
    r = httpx.post(server[0] + "/v1/completions", content=body, timeout=10,
                   headers={"content-type": "application/json"})
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["param"] == param
    assert err["message"]


def test_openai_client_raises_on_bad_params(client):
    with pytest.raises(openai.BadRequestError):
        client.completions.create(model="book", prompt="x", temperature=3)
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="book", messages=[{"role": "robot", "content": "x"}])


def test_metrics_and_load_test(server):
    url, _ = server
    prompts = ["def a():\n", "import re\n" * 4, "class B(object):\n    pass\n"]
    report = load_test(url, prompts, num_requests=6, rate=20, output_lens=(4, 12), timeout=60)
    assert report.failed == 0 and report.throughput > 0
    assert report.ttft_ms["p50"] <= report.ttft_ms["p99"]
    text = httpx.get(url + "/metrics", timeout=5).text
    for name in ("llmlab_num_requests_waiting", "llmlab_num_requests_running",
                 "llmlab_kv_blocks_used", "llmlab_time_to_first_token_seconds_bucket",
                 "llmlab_time_per_output_token_seconds_count"):
        assert name in text
    count = [ln for ln in text.splitlines() if ln.startswith("llmlab_time_to_first_token_seconds_count")]
    assert int(count[0].split()[1]) >= 6


def test_cli_serves_and_shuts_down_gracefully(cli_server):
    """`llmlab serve` in its own process; SIGTERM mid-stream lets the stream finish first."""
    with cli_server("book", start_timeout=40) as (proc, url):
        body = {"model": "book", "prompt": "def f():\n", "max_tokens": 40, "stream": True,
                "ignore_eos": True}
        with httpx.Client(timeout=20) as c, c.stream("POST", url + "/v1/completions", json=body) as r:
            lines = iter(r.iter_lines())
            next(lines)
            proc.send_signal(signal.SIGTERM)
            rest = [ln for ln in lines if ln]
        assert rest[-1] == "data: [DONE]"  # the in-flight stream finished
        # uvicorn re-raises the signal once its graceful shutdown is complete
        assert proc.wait(timeout=20) in (0, -signal.SIGTERM)
        assert b"Application shutdown complete" in proc.stdout.read()
