"""`llmlab mcp` driven by the official MCP SDK's own client over stdio: list the tools, call
each, bad arguments are protocol errors, a looping or crashing tool is killed and reported, and
the server goes on serving. Also the agent's MCP tool source against the same server."""

from __future__ import annotations

import sys

import anyio
import pytest

mcp = pytest.importorskip("mcp")

from mcp.client import Client  # noqa: E402
from mcp.client.stdio import StdioServerParameters  # noqa: E402
from mcp.shared.exceptions import MCPError  # noqa: E402

SERVER = StdioServerParameters(command=sys.executable,
                               args=["-m", "llmlab.cli", "mcp", "--max-files", "15", "--timeout", "2"])


def text(result) -> str:
    return "\n".join(c.text for c in result.content)


async def session_checks() -> dict:
    out: dict = {}
    async with Client(SERVER) as client:
        tools = (await client.list_tools()).tools
        out["tools"] = {t.name: t.input_schema for t in tools}
        out["python"] = await client.call_tool("run_python", {"code": "print(6 * 7)"})
        out["search"] = await client.call_tool("search", {"query": "return the platform tag", "k": 2})
        out["errors"] = []
        for name, args in [("run_python", {"code": 3}), ("run_python", {}), ("nope", {}),
                           ("search", {"query": ""}), ("search", {"query": "x", "extra": 1})]:
            try:
                await client.call_tool(name, args)
                out["errors"].append(None)
            except MCPError as exc:
                out["errors"].append((exc.error.code, exc.error.message))
        out["loop"] = await client.call_tool("run_python", {"code": "while True: pass"})
        out["crash"] = await client.call_tool("run_python", {"code": "import os; os.abort()"})
        out["after"] = await client.call_tool("run_python", {"code": "print('still here')"})
    return out


@pytest.fixture(scope="module")
def checks():
    return anyio.run(session_checks)


def test_lists_both_tools_with_schemas(checks):
    assert set(checks["tools"]) == {"search", "run_python"}
    assert checks["tools"]["run_python"]["required"] == ["code"]
    assert checks["tools"]["search"]["properties"]["query"]["type"] == "string"


def test_calls_each_tool(checks):
    assert not checks["python"].is_error and text(checks["python"]).strip() == "42"
    hits = text(checks["search"]).splitlines()
    assert len(hits) == 2 and all("::" in h for h in hits)


def test_bad_arguments_are_protocol_errors(checks):
    codes = [e[0] if e else None for e in checks["errors"]]
    assert codes == [-32602] * 5, checks["errors"]
    messages = [e[1] for e in checks["errors"]]
    assert "type string" in messages[0] and "required" in messages[1]
    assert "unknown tool" in messages[2] and "length" in messages[3] and "extra" in messages[4]


def test_looping_and_crashing_tools_are_killed_and_the_server_survives(checks):
    assert checks["loop"].is_error and "timed out" in text(checks["loop"])
    assert checks["crash"].is_error and "SIGABRT" in text(checks["crash"])
    assert not checks["after"].is_error and text(checks["after"]).strip() == "still here"


def test_agent_tool_source_over_mcp():
    from llmlab.agent import MCPToolSource, ToolError, parse_call, run_call

    with MCPToolSource([SERVER.command, *SERVER.args]) as source:
        tools = source.tools
        assert sorted(t.name for t in tools) == ["run_python", "search"]
        call = parse_call('{"name":"run_python","arguments":{"code":"print(1 + 1)"}}', tools)
        assert run_call(call, tools).strip() == "2"
        with pytest.raises(ToolError, match="-32602"):
            source.call("run_python", {"code": 1})
        assert run_call(parse_call('{"name":"run_python","arguments":{"code":"1/0"}}', tools),
                        tools).startswith("error: RuntimeError: ZeroDivisionError")


def test_tool_source_starts_where_stderr_has_no_file_descriptor(monkeypatch):
    """In a notebook, sys.stderr is the kernel's stream: the server's stderr must go elsewhere."""
    import io

    from llmlab.agent import MCPToolSource

    monkeypatch.setattr(sys, "stderr", io.StringIO())
    monkeypatch.setattr(sys, "__stderr__", io.StringIO())
    with MCPToolSource([SERVER.command, *SERVER.args]) as source:
        assert source._devnull is not None and not source._devnull.closed
        assert source.call("run_python", {"code": "print(6 * 7)"}).strip() == "42"
    assert source._devnull.closed
