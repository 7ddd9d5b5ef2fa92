"""A ReAct agent loop: think, call a tool, observe, repeat, answer.

Yao et al., "ReAct: Synergizing Reasoning and Acting in Language Models", arXiv:2210.03629.
The transcript is plain lines the model continues one at a time::

    Task: What is 417 * 23?
    Thought: compute it with Python
    Call: {"name":"run_python","arguments":{"code":"print(417 * 23)"}}
    Result: 9591
    Answer: 9591

The model writes ``Thought:``, ``Call:`` and ``Answer:`` lines; the loop writes ``Result:``
lines (a tool's output, or the error a bad call earned, so the model can retry). With
``constrained=True`` every line the model writes is decoded under a token automaton
(:mod:`llmlab.agent.json_schema` over :func:`llmlab.agent.tools.call_schema`, chapter 09's
:class:`~llmlab.serve.TokenAutomaton`): a call that ends always parses and always fits its tool's
schema. What the automaton cannot bound is length: a call still inside a string when the line's
``max_tokens`` run out is *cut* (counted apart from invalid calls, as an API's
``finish_reason="length"`` is). Without, a call is whatever the model wrote, parsed afterwards
(a cut call is then just invalid). Tools come from a list of
:class:`~llmlab.agent.tools.Tool` — local functions or any MCP server's
(:mod:`llmlab.agent.mcp_client`). Taught in chapter 12 (solutions/12_rag_agents).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from torch import nn

from llmlab.agent.json_schema import schema_to_regex
from llmlab.agent.tools import Tool, ToolError, call_schema, parse_call, run_call
from llmlab.rag.generate import complete
from llmlab.serve import TokenAutomaton
from llmlab.utils import reject_unknown_keys

FREE_LINE = "[^\\n]{0,80}\\n"


def line_regex(tools: Sequence[Tool]) -> str:
    """The language of one model-written line: a thought, a schema-valid call, or an answer."""
    return (f"(?:Thought: {FREE_LINE}|Call: {schema_to_regex(call_schema(tools))}\\n"
            f"|Answer: {FREE_LINE})")


@reject_unknown_keys
@dataclass
class AgentConfig:
    max_steps: int = 6          # model-written lines before the loop gives up
    max_tokens: int = 96        # tokens per line
    max_observation: int = 160  # characters of a tool's output shown to the model
    constrained: bool = False


@dataclass
class AgentRun:
    """What one run did: the transcript, the answer (None if none came), and the calls."""

    transcript: str
    answer: str | None = None
    calls: int = 0
    invalid_calls: int = 0
    cut_calls: int = 0
    errors: list[str] = field(default_factory=list)


def observation(text: str, limit: int) -> str:
    """A tool's output on one line, cut to ``limit`` characters."""
    flat = " | ".join(line.strip() for line in text.strip().splitlines() if line.strip())
    return flat if len(flat) <= limit else flat[:limit - 3] + "..."


class ReActAgent:
    """``ReActAgent(model, tokenizer, tools, config).run_many(tasks)`` -> [AgentRun]."""

    def __init__(self, model: nn.Module, tokenizer, tools: Sequence[Tool],
                 config: AgentConfig | None = None) -> None:
        if not tools:
            raise ValueError("an agent needs at least one tool")
        self.model, self.tokenizer, self.tools = model, tokenizer, list(tools)
        self.config = config or AgentConfig()
        self.automaton = None
        if self.config.constrained:
            eos = tokenizer.special_ids["<|endoftext|>"]
            self.automaton = TokenAutomaton.build(line_regex(self.tools), tokenizer, eos)

    def step(self, run: AgentRun, line: str, cut: bool = False) -> bool:
        """Apply one model-written line to ``run``; True when the run is over. ``cut``: the line
        ran out of ``max_tokens`` before its end."""
        line = line.rstrip("\n")
        run.transcript += line + "\n"
        if line.startswith("Answer:"):
            run.answer = line[len("Answer:"):].strip()
            return True
        if line.startswith("Thought:"):
            return False
        if not line.startswith("Call:"):
            run.errors.append(f"not a Thought/Call/Answer line: {line[:40]!r}")
            return True
        run.calls += 1
        try:
            if cut:
                raise ToolError(f"the call was cut at {self.config.max_tokens} tokens")
            call = parse_call(line[len("Call:"):].strip(), self.tools)
            result = run_call(call, self.tools)
        except ToolError as exc:
            if cut:
                run.cut_calls += 1
            else:
                run.invalid_calls += 1
            run.errors.append(str(exc))
            result = f"error: {exc}"
        run.transcript += f"Result: {observation(result, self.config.max_observation)}\n"
        return False

    def run_many(self, tasks: Sequence[str]) -> list[AgentRun]:
        """Run every task to an answer or ``max_steps``; lines of all live runs decode as one batch."""
        runs = [AgentRun(f"Task: {t}\n") for t in tasks]
        live = list(range(len(runs)))
        for _ in range(self.config.max_steps):
            if not live:
                break
            lines = complete(self.model, self.tokenizer, [runs[i].transcript for i in live],
                             self.config.max_tokens, ("\n",), self.automaton)
            # under the automaton a finished line ends with its newline; one without was cut
            cut = [self.automaton is not None and not line.endswith("\n") for line in lines]
            live = [i for i, line, c in zip(live, lines, cut) if not self.step(runs[i], line, c)]
        return runs


__all__ = ["AgentConfig", "AgentRun", "ReActAgent", "line_regex", "observation"]
