import json

import pytest

from llmlab.serve import ApiError, Histogram, percentiles, sse_event
from llmlab.serve.openai_api import chat_prompt, completion_prompt, parse_sampling


def test_parse_sampling_maps_openai_fields():
    p = parse_sampling({"max_tokens": 5, "temperature": 0, "stop": "\n", "seed": 3,
                        "logit_bias": {"7": -100}, "top_k": 4, "logprobs": 2}, 100)
    assert (p.max_new_tokens, p.temperature, p.stop, p.seed, p.logit_bias, p.top_k, p.logprobs) == (
        5, 0.0, ["\n"], 3, {7: -100.0}, 4, 2)
    assert parse_sampling({"logprobs": True, "top_logprobs": 3}, 100).logprobs == 3


@pytest.mark.parametrize("body,param", [({"temperature": "hot"}, "temperature"),
                                        ({"max_tokens": 1.5}, "max_tokens"),
                                        ({"max_tokens": 0}, "max_tokens"),
                                        ({"stop": [1]}, "stop"), ({"n": 2}, "n"),
                                        ({"logit_bias": {"x": 1}}, "logit_bias"),
                                        ({"ignore_eos": "yes"}, "ignore_eos")])
def test_parse_sampling_errors_name_the_field(body, param):
    with pytest.raises(ApiError) as err:
        parse_sampling(body, 100)
    assert err.value.status == 400 and err.value.body()["error"]["param"] == param


def test_prompts():
    assert completion_prompt({"prompt": ["hi"]}) == "hi"
    assert completion_prompt({"prompt": [1, 2]}) == [1, 2]
    with pytest.raises(ApiError):
        completion_prompt({"prompt": ["a", "b"]})
    text = chat_prompt({"messages": [{"role": "user", "content": "x"}]})
    assert text.endswith("<|im_start|>assistant\n")
    with pytest.raises(ApiError):
        chat_prompt({"messages": [{"role": "user"}]})


def test_sse_and_metrics():
    assert sse_event({"a": [1, 2]}) == 'data: {"a":[1,2]}\n\n'
    assert sse_event("[DONE]") == "data: [DONE]\n\n"
    assert json.loads(sse_event({"t": "é\n"})[6:]) == {"t": "é\n"}
    h = Histogram((0.1, 1.0))
    for v in (0.05, 0.5, 0.5, 3.0):
        h.observe(v)
    lines = h.lines("x")
    assert 'x_bucket{le="0.1"} 1' in lines and 'x_bucket{le="1.0"} 3' in lines
    assert 'x_bucket{le="+Inf"} 4' in lines and "x_count 4" in lines
    assert percentiles([3, 1, 2, 4], (50, 100)) == {"p50": 2, "p100": 4}
