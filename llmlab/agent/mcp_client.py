"""Any MCP server's tools as :class:`~llmlab.agent.tools.Tool` objects the agent loop can call.

``with MCPToolSource([sys.executable, "-m", "llmlab.cli", "mcp"]) as source: source.tools``
starts the server as a subprocess (the official SDK's stdio transport), asks it ``tools/list``,
and wraps each tool so that calling it sends ``tools/call``. The SDK is asynchronous and the
agent loop is not: one background thread runs the event loop and holds the connection for the
life of the ``with`` block; each call waits for its answer up to ``timeout`` seconds. A protocol
error (unknown tool, bad arguments) raises :class:`~llmlab.agent.tools.ToolError`; a tool result
with ``isError`` raises ``RuntimeError`` with its text — the agent observes both as errors.
Taught in chapter 12 (solutions/12_rag_agents).
"""

from __future__ import annotations

import asyncio
import os
import sys
import threading
from collections.abc import Sequence
from typing import Any

from llmlab.agent.tools import Tool, ToolError


class MCPToolSource:
    """A live connection to an MCP server over stdio; ``tools`` lists what it serves."""

    def __init__(self, command: Sequence[str], env: dict[str, str] | None = None,
                 timeout: float = 60.0) -> None:
        if not command:
            raise ValueError("command must name the server's executable")
        self.command, self.env, self.timeout = list(command), env, timeout
        self.tools: list[Tool] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._client: Any = None
        self._closing: asyncio.Event | None = None
        self._task: asyncio.Future | None = None
        self._devnull = None

    async def _hold(self, ready: asyncio.Future) -> None:
        from mcp.client import Client
        from mcp.client.stdio import StdioServerParameters, stdio_client

        params = StdioServerParameters(command=self.command[0], args=self.command[1:], env=self.env)
        self._closing = asyncio.Event()
        try:
            async with Client(stdio_client(params, errlog=self._errlog())) as client:
                self._client = client
                listed = await client.list_tools()
                ready.set_result(listed.tools)
                await self._closing.wait()
        except BaseException as exc:
            if not ready.done():
                ready.set_exception(exc)
            raise

    def _errlog(self):
        """Where the server's stderr goes: this process's own stderr. In a notebook ``sys.stderr``
        is the kernel's stream, with no file descriptor to hand a subprocess (the SDK's default)."""
        try:
            sys.__stderr__.fileno()
            return sys.__stderr__
        except (AttributeError, OSError, ValueError):
            self._devnull = self._devnull or open(os.devnull, "w")  # noqa: SIM115 — closed in __exit__
            return self._devnull

    def __enter__(self) -> MCPToolSource:
        self._thread.start()
        ready: asyncio.Future = self._loop.create_future()
        self._task = asyncio.run_coroutine_threadsafe(self._hold(ready), self._loop)
        listed = asyncio.run_coroutine_threadsafe(_wait(ready), self._loop).result(self.timeout)
        self.tools = [Tool(t.name, t.description or "", t.input_schema, self._caller(t.name))
                      for t in listed]
        return self

    def _caller(self, name: str):
        def call(**arguments: Any) -> str:
            return self.call(name, arguments)
        call.__name__ = name
        return call

    def call(self, name: str, arguments: dict[str, Any]) -> str:
        """``tools/call``: the text of the result (see the module doc for errors)."""
        from mcp.shared.exceptions import MCPError

        future = asyncio.run_coroutine_threadsafe(self._client.call_tool(name, arguments), self._loop)
        try:
            result = future.result(self.timeout)
        except MCPError as exc:
            raise ToolError(f"{name}: protocol error {exc.error.code}: {exc.error.message}") from None
        text = "\n".join(getattr(c, "text", "") for c in result.content)
        if result.is_error:
            raise RuntimeError(text)
        return text

    def __exit__(self, *exc: object) -> None:
        if self._closing is not None:
            self._loop.call_soon_threadsafe(self._closing.set)
        if self._task is not None:
            try:
                self._task.result(self.timeout)
            except BaseException:  # noqa: BLE001 — closing: the server may already be gone
                pass
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(self.timeout)
        self._loop.close()
        if self._devnull is not None:
            self._devnull.close()


async def _wait(future: asyncio.Future) -> Any:
    return await future


__all__ = ["MCPToolSource"]
