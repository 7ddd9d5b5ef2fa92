"""``llmlab mcp [--timeout S] [--no-search] [--max-files N]``: the book's MCP server over stdio.

Point any MCP client at it, e.g. ``{"command": "llmlab", "args": ["mcp"]}``. Taught in chapter
12 (solutions/12_rag_agents).
"""

from __future__ import annotations

import argparse


def register(subparsers) -> argparse.ArgumentParser:
    """Add the ``mcp`` subcommand to an ``argparse`` subparsers object."""
    p = subparsers.add_parser("mcp", help="serve the book's search and run_python tools over MCP (stdio)")
    p.add_argument("--timeout", type=float, default=5.0, help="run_python's wall-clock limit (s)")
    p.add_argument("--no-search", action="store_true", help="serve run_python only")
    p.add_argument("--max-files", type=int, default=120, help="corpus files the search indexes")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from llmlab.agent.mcp_server import main

    return main(args)
