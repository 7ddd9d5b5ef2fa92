"""Agents: tools with JSON-Schema arguments, constrained tool calls, a ReAct loop, a sandboxed
Python tool, tool-use fine-tuning, and the Model Context Protocol (server and tool source).

``json_schema`` (a schema to a regex, then chapter 09's token automaton; masks equal
xgrammar's), ``tools`` (tools, calls, parsing), ``python_tool`` (a limited process per snippet),
``react`` (the loop), ``traces`` and ``finetune`` (synthetic tool-use traces, LoRA on them),
``mcp_server`` (``llmlab mcp``: search and run_python over stdio), ``mcp_client`` (any MCP
server's tools for the loop). Builds on ``llmlab.rag`` (the search tool), ``llmlab.serve``,
``llmlab.peft`` and ``llmlab.align``. Taught in chapter 12 (solutions/12_rag_agents).
"""

from llmlab.agent.finetune import ToolTuneConfig, finetune_tool_use, pad_examples
from llmlab.agent.json_schema import literal, schema_to_regex, validate
from llmlab.agent.mcp_client import MCPToolSource
from llmlab.agent.mcp_server import build_server, python_tool, search_tool, serve_stdio
from llmlab.agent.python_tool import TOOL_LIMITS, PythonResult, PythonTool, run_python
from llmlab.agent.react import (
    AgentConfig,
    AgentRun,
    LineWriter,
    ReActAgent,
    apply_line,
    line_regex,
    observation,
    run_agent,
)
from llmlab.agent.tools import Tool, ToolCall, ToolError, call_schema, parse_call, run_call
from llmlab.agent.traces import Task, arithmetic_tasks, lookup_tasks, solution_lines, trace_example

__all__ = [
    "TOOL_LIMITS",
    "AgentConfig",
    "AgentRun",
    "LineWriter",
    "MCPToolSource",
    "PythonResult",
    "PythonTool",
    "ReActAgent",
    "Task",
    "Tool",
    "ToolCall",
    "ToolError",
    "ToolTuneConfig",
    "apply_line",
    "arithmetic_tasks",
    "build_server",
    "call_schema",
    "finetune_tool_use",
    "line_regex",
    "literal",
    "lookup_tasks",
    "observation",
    "pad_examples",
    "parse_call",
    "python_tool",
    "run_agent",
    "run_call",
    "run_python",
    "schema_to_regex",
    "search_tool",
    "serve_stdio",
    "solution_lines",
    "trace_example",
    "validate",
]
