"""The OpenAI wire format: request parsing, error bodies, response and SSE chunk builders.

Pure functions over JSON-like dicts (no web framework), so each can be tested alone. Requests
follow OpenAI's ``/v1/completions`` and ``/v1/chat/completions`` (with vLLM's extra sampling
fields ``top_k``, ``min_p``, ``repetition_penalty``, ``ignore_eos`` and ``guided_regex``); a bad
request raises :class:`ApiError`, which the server turns into OpenAI's error body
``{"error": {"message", "type", "param", "code"}}``. Streaming uses Server-Sent Events
(https://html.spec.whatwg.org/multipage/server-sent-events.html): each chunk is
``data: <json>\\n\\n`` and the stream ends with ``data: [DONE]\\n\\n``. Taught in chapter 09
(solutions/09_serve).
"""

from __future__ import annotations

import json
import time
from typing import Any

from llmlab.model.sampling import SamplingParams


class ApiError(Exception):
    """An error the client caused (4xx) or the server hit, in OpenAI's shape."""

    def __init__(self, status: int, message: str, param: str | None = None,
                 code: str | None = None, type: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.type = status, message, param, code, type

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param,
                          "code": self.code}}


def sse_event(data: dict[str, Any] | str) -> str:
    """One Server-Sent Event carrying ``data`` (a dict is sent as compact JSON)."""
    payload = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    return f"data: {payload}\n\n"


_NUMBERS = {"temperature": 1.0, "top_p": 1.0, "min_p": 0.0, "repetition_penalty": 1.0,
            "presence_penalty": 0.0, "frequency_penalty": 0.0}


def _typed(body: dict, name: str, kinds: tuple[type, ...], default: Any) -> Any:
    value = body.get(name, default)
    if value is None:
        return default
    if not isinstance(value, kinds) or isinstance(value, bool) and bool not in kinds:
        expected = " or ".join(k.__name__ for k in kinds)
        raise ApiError(400, f"{name} must be {expected}, got {type(value).__name__}", name)
    return value


def parse_sampling(body: dict, vocab_size: int) -> SamplingParams:
    """OpenAI request fields -> :class:`SamplingParams` (ApiError naming the bad field)."""
    stop = _typed(body, "stop", (str, list), [])
    stop = [stop] if isinstance(stop, str) else stop
    if not all(isinstance(s, str) for s in stop):
        raise ApiError(400, "stop must be a string or a list of strings", "stop")
    bias = _typed(body, "logit_bias", (dict,), {})
    try:
        logit_bias = {int(k): float(v) for k, v in bias.items()}
    except (TypeError, ValueError):
        raise ApiError(400, "logit_bias must map token ids to numbers", "logit_bias") from None
    max_tokens = _typed(body, "max_completion_tokens", (int,), None)
    max_tokens = _typed(body, "max_tokens", (int,), 16 if max_tokens is None else max_tokens)
    logprobs = body.get("logprobs")
    if body.get("top_logprobs") is not None or logprobs is True:  # the chat API's form
        logprobs = _typed(body, "top_logprobs", (int,), 0)
    elif logprobs is False:
        logprobs = None
    elif logprobs is not None:
        logprobs = _typed(body, "logprobs", (int,), None)
    if _typed(body, "n", (int,), 1) != 1:
        raise ApiError(400, "only n = 1 is supported", "n")
    try:
        params = SamplingParams(
            max_new_tokens=max_tokens,
            top_k=_typed(body, "top_k", (int,), 0),
            logit_bias=logit_bias,
            seed=_typed(body, "seed", (int,), None),
            stop=stop,
            stop_token_ids=_typed(body, "stop_token_ids", (list,), []),
            ignore_eos=_typed(body, "ignore_eos", (bool,), False),
            logprobs=logprobs,
            regex=_typed(body, "guided_regex", (str,), None),
            **{k: float(_typed(body, k, (int, float), d)) for k, d in _NUMBERS.items()},
        )
        return params.validate(vocab_size)
    except ValueError as exc:
        raise ApiError(400, str(exc.args[0]), error_param(exc)) from None


def error_param(exc: ValueError) -> str | None:
    """The request field a ``ValueError(message, field)`` names, in OpenAI's words."""
    param = exc.args[1] if len(exc.args) > 1 else None
    return "max_tokens" if param == "max_new_tokens" else param


def chat_prompt(body: dict) -> str:
    """The ChatML text of ``messages`` with the assistant's turn opened (chapter 01's template)."""
    from llmlab.tokenizer.chat import render_chatml

    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ApiError(400, "messages must be a non-empty list", "messages")
    try:
        clean = [{"role": m["role"], "content": m["content"]} for m in messages]
        if not all(isinstance(m["content"], str) for m in clean):
            raise ValueError("each message's content must be a string")
        return render_chatml(clean, add_generation_prompt=True)[0]
    except (TypeError, KeyError, ValueError) as exc:
        raise ApiError(400, f"bad messages: {exc}", "messages") from None


def completion_prompt(body: dict) -> str | list[int]:
    """The prompt of a completions request: a string, a one-string list or a list of token ids."""
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if isinstance(prompt, str) and prompt:
        return prompt
    if isinstance(prompt, list) and prompt and all(type(t) is int for t in prompt):
        return prompt
    raise ApiError(400, "prompt must be a non-empty string or list of token ids (one prompt)",
                   "prompt")


def _logprobs_block(entries, decode) -> dict | None:
    if not entries:
        return None
    return {"tokens": [decode(t) for t, _, _ in entries],
            "token_logprobs": [lp for _, lp, _ in entries],
            "top_logprobs": [{decode(i): v for i, v in top.items()} for _, _, top in entries]}


def completion_response(rid: str, model: str, chat: bool, text: str, finish: str | None,
                        usage: dict | None, logprobs=None, decode=None, delta: bool = False,
                        first: bool = False) -> dict[str, Any]:
    """A whole response (``delta=False``) or one streamed chunk, for either API."""
    if chat:
        if delta:
            content = {"role": "assistant", "content": text} if first else {"content": text}
            choice = {"index": 0, "delta": content, "finish_reason": finish}
        else:
            choice = {"index": 0, "message": {"role": "assistant", "content": text},
                      "finish_reason": finish}
        kind = "chat.completion.chunk" if delta else "chat.completion"
    else:
        choice = {"index": 0, "text": text, "finish_reason": finish,
                  "logprobs": _logprobs_block(logprobs, decode)}
        kind = "text_completion"
    out = {"id": rid, "object": kind, "created": int(time.time()), "model": model,
           "choices": [choice]}
    if usage is not None:
        out["usage"] = usage
    return out
