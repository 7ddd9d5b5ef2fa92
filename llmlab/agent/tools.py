"""Tools an agent can call: a name, a description, a JSON Schema for the arguments, a function.

A tool call is one line of compact JSON, ``{"name":"search","arguments":{"query":"..."}}`` —
the shape of OpenAI's function calling and of MCP's ``tools/call``. :func:`call_schema` is the
schema of "a call to one of these tools" (an ``anyOf`` over the tools), which
:mod:`llmlab.agent.json_schema` compiles to a regex, so a constrained decoder can only write
calls that parse and whose arguments fit. :func:`parse_call` is what an unconstrained decoder's
output must survive. Taught in chapter 12 (solutions/12_rag_agents).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from llmlab.agent.json_schema import validate


@dataclass(frozen=True)
class Tool:
    """``fn(**arguments) -> str`` (what the agent observes); ``parameters`` is a JSON Schema
    object (``{"type": "object", "properties": ..., "required": [...]}``)."""

    name: str
    description: str
    parameters: Mapping[str, Any]
    fn: Callable[..., str]


@dataclass(frozen=True)
class ToolCall:
    name: str
    arguments: dict[str, Any]

    def to_json(self) -> str:
        return json.dumps({"name": self.name, "arguments": self.arguments}, separators=(",", ":"),
                          ensure_ascii=False)


class ToolError(ValueError):
    """A call that cannot run: not JSON, an unknown tool, or arguments the schema rejects."""


def call_schema(tools: Sequence[Tool]) -> dict[str, Any]:
    """The JSON Schema of one call to any of ``tools``."""
    if not tools:
        raise ValueError("no tools")
    options = [{"type": "object", "properties": {"name": {"const": t.name}, "arguments": t.parameters},
                "required": ["name", "arguments"]} for t in tools]
    return options[0] if len(options) == 1 else {"anyOf": options}


def parse_call(text: str, tools: Sequence[Tool]) -> ToolCall:
    """The :class:`ToolCall` that ``text`` holds, or :class:`ToolError` saying what is wrong."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ToolError(f"not JSON: {exc.msg} at character {exc.pos}") from None
    if not isinstance(data, dict) or set(data) != {"name", "arguments"}:
        raise ToolError('a call is {"name": ..., "arguments": {...}}')
    by_name = {t.name: t for t in tools}
    if data["name"] not in by_name:
        raise ToolError(f"unknown tool {data['name']!r}; tools: {sorted(by_name)}")
    msg = validate(data["arguments"], by_name[data["name"]].parameters, "arguments")
    if msg:
        raise ToolError(msg)
    return ToolCall(data["name"], data["arguments"])


def run_call(call: ToolCall, tools: Sequence[Tool]) -> str:
    """Run a parsed call; a tool's own exception becomes the observation ("error: ...")."""
    tool = {t.name: t for t in tools}[call.name]
    try:
        return str(tool.fn(**call.arguments))
    except Exception as exc:  # noqa: BLE001 — the agent observes the failure and may retry
        return f"error: {type(exc).__name__}: {exc}"


__all__ = ["Tool", "ToolCall", "ToolError", "call_schema", "parse_call", "run_call"]
