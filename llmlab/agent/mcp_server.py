"""An MCP server over stdio exposing the book's tools: ``search`` and ``run_python``.

The Model Context Protocol (modelcontextprotocol.io; JSON-RPC 2.0 over stdio or HTTP) is how
Claude, ChatGPT, Cursor and most agent frameworks discover and call tools a separate process
provides. A server answers ``tools/list`` (name, description, JSON Schema of the arguments) and
``tools/call``. This one is built on the official SDK's low-level :class:`mcp.server.Server`:

- arguments are checked against the tool's schema (:func:`llmlab.agent.json_schema.validate`)
  *before* the tool runs; a call to an unknown tool or with bad arguments is a protocol error
  (JSON-RPC ``-32602`` Invalid params, as the specification lists them), not a tool result;
- a tool that fails is a tool result with ``isError: true`` (the model may read it and retry);
- ``run_python`` runs in :mod:`llmlab.agent.python_tool`'s limited process, so a snippet that
  loops or crashes is killed and reported, and the server goes on serving.

``llmlab mcp`` starts it (``llmlab mcp --help``). The ``search`` tool is BM25 over the
documented functions of the book's corpus (:mod:`llmlab.rag`). Taught in chapter 12
(solutions/12_rag_agents).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from llmlab.agent.json_schema import validate
from llmlab.agent.python_tool import PythonTool
from llmlab.agent.tools import Tool

SEARCH_SCHEMA = {"type": "object", "properties": {"query": {"type": "string", "minLength": 1},
                                                 "k": {"type": "integer"}},
                 "required": ["query"]}
PYTHON_SCHEMA = {"type": "object", "properties": {"code": {"type": "string"}}, "required": ["code"]}


def python_tool(timeout: float = 5.0) -> Tool:
    """``run_python``: run a snippet in a limited process; its output, or why it failed."""
    runner = PythonTool(timeout=timeout)

    def run_python(code: str) -> str:
        result = runner(code)
        if not result.ok:
            raise RuntimeError(f"{result.error}\n{result.output}".strip())
        return result.output

    return Tool("run_python", "Run a Python snippet (no network, limited CPU and memory) and "
                "return what it printed.", PYTHON_SCHEMA, run_python)


def search_tool(docs=None, max_files: int | None = 120) -> Tool:
    """``search``: BM25 over the documented functions of ``docs`` (default: the book's corpus)."""
    from llmlab.rag.bm25 import BM25, words
    from llmlab.rag.corpus import code_pairs

    if docs is None:
        from llmlab.data import load_documents

        docs = load_documents()[:max_files]
    pairs = code_pairs(docs)
    index = BM25([words(p.query + " " + p.code) for p in pairs])

    def search(query: str, k: int = 3) -> str:
        if not 1 <= k <= 20:
            raise ValueError(f"k must be in 1..20, got {k}")
        hits = index.search(words(query), k)
        return "\n".join(f"{pairs[i].id}  {pairs[i].query[:80]}" for i, _ in hits)

    return Tool("search", "Search the book's corpus of Python functions by what they do; "
                "returns the ids (file::function) of the best matches.", SEARCH_SCHEMA, search)


def build_server(tools: Sequence[Tool], name: str = "llmlab"):
    """A low-level MCP ``Server`` serving ``tools`` (see the module doc for the error rules)."""
    import anyio
    import mcp_types as types
    from mcp.server import Server
    from mcp.shared.exceptions import MCPError

    by_name = {t.name: t for t in tools}

    async def list_tools(ctx, params) -> types.ListToolsResult:
        return types.ListToolsResult(tools=[
            types.Tool(name=t.name, description=t.description, input_schema=dict(t.parameters))
            for t in tools])

    async def call_tool(ctx, params) -> types.CallToolResult:
        tool = by_name.get(params.name)
        if tool is None:
            raise MCPError(code=types.INVALID_PARAMS, message=f"unknown tool {params.name!r}; "
                           f"tools: {sorted(by_name)}")
        arguments: dict[str, Any] = dict(params.arguments or {})
        problem = validate(arguments, tool.parameters, "arguments")
        if problem:
            raise MCPError(code=types.INVALID_PARAMS, message=f"{params.name}: {problem}")
        try:  # tools block (a subprocess, an index scan): run them off the event loop
            text = await anyio.to_thread.run_sync(lambda: str(tool.fn(**arguments)))
        except Exception as exc:  # noqa: BLE001 — a failing tool is a result the model reads
            return types.CallToolResult(content=[types.TextContent(type="text", text=str(exc))],
                                        is_error=True)
        return types.CallToolResult(content=[types.TextContent(type="text", text=text)])

    return Server(name, on_list_tools=list_tools, on_call_tool=call_tool)


def serve_stdio(tools: Sequence[Tool]) -> None:
    """Serve ``tools`` over this process's stdin and stdout until the client closes them."""
    import anyio
    from mcp.server.stdio import stdio_server

    server = build_server(tools)

    async def main() -> None:
        async with stdio_server() as (read, write):
            await server.run(read, write, server.create_initialization_options())

    anyio.run(main)


def main(args: argparse.Namespace) -> int:
    """``llmlab mcp``: the book's ``search`` and ``run_python`` over stdio."""
    tools = [python_tool(args.timeout)]
    if not args.no_search:
        tools.insert(0, search_tool(max_files=args.max_files))
    serve_stdio(tools)
    return 0


__all__ = ["PYTHON_SCHEMA", "SEARCH_SCHEMA", "build_server", "python_tool", "search_tool",
           "serve_stdio"]
