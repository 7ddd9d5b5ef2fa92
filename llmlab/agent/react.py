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


@dataclass
class LineWriter:
    """``writer(transcripts) -> [(line, cut)]``: the model's next line of every transcript, in one
    batch through the engine (:func:`llmlab.rag.generate.complete`), and whether it was cut:
    under the automaton a finished line ends with its newline, so one without ran out of
    ``max_tokens``."""

    model: nn.Module
    tokenizer: object
    max_tokens: int = 96
    automaton: TokenAutomaton | None = None

    def __call__(self, transcripts: Sequence[str]) -> list[tuple[str, bool]]:
        lines = complete(self.model, self.tokenizer, list(transcripts), self.max_tokens, ("\n",),
                         self.automaton)
        return [(line, self.automaton is not None and not line.endswith("\n")) for line in lines]


def apply_line(run: AgentRun, line: str, cut: bool, tools: Sequence[Tool],
               max_observation: int = 160) -> bool:
    """Apply one model-written line to ``run``; True when the run is over. ``cut``: the line
    ran out of tokens before its end."""
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
            raise ToolError("the call was cut before its end")
        call = parse_call(line[len("Call:"):].strip(), tools)
        result = run_call(call, tools)
    except ToolError as exc:
        if cut:
            run.cut_calls += 1
        else:
            run.invalid_calls += 1
        run.errors.append(str(exc))
        result = f"error: {exc}"
    run.transcript += f"Result: {observation(result, max_observation)}\n"
    return False


def run_agent(write_lines, tools: Sequence[Tool], tasks: Sequence[str], max_steps: int = 6,
              max_observation: int = 160) -> list[AgentRun]:
    """Run every task to an answer or ``max_steps`` model-written lines; the lines of all live
    runs are written in one call of ``write_lines`` (a :class:`LineWriter`) per step."""
    if not tools:
        raise ValueError("an agent needs at least one tool")
    if max_steps < 1:
        raise ValueError(f"max_steps must be >= 1, got {max_steps}")
    runs = [AgentRun(f"Task: {t}\n") for t in tasks]
    live = list(range(len(runs)))
    for _ in range(max_steps):
        if not live:
            break
        written = write_lines([runs[i].transcript for i in live])
        live = [i for i, (line, cut) in zip(live, written)
                if not apply_line(runs[i], line, cut, tools, max_observation)]
    return runs


class ReActAgent:
    """``ReActAgent(model, tokenizer, tools, config).run_many(tasks)`` -> [AgentRun]."""

    def __init__(self, model: nn.Module, tokenizer, tools: Sequence[Tool],
                 config: AgentConfig | None = None) -> None:
        if not tools:
            raise ValueError("an agent needs at least one tool")
        self.model, self.tokenizer, self.tools = model, tokenizer, list(tools)
        self.config = config or AgentConfig()
        automaton = None
        if self.config.constrained:
            eos = tokenizer.special_ids["<|endoftext|>"]
            automaton = TokenAutomaton.build(line_regex(self.tools), tokenizer, eos)
        self.writer = LineWriter(model, tokenizer, self.config.max_tokens, automaton)

    def step(self, run: AgentRun, line: str, cut: bool = False) -> bool:
        """:func:`apply_line` with this agent's tools and observation limit."""
        return apply_line(run, line, cut, self.tools, self.config.max_observation)

    def run_many(self, tasks: Sequence[str]) -> list[AgentRun]:
        """Run every task to an answer or ``max_steps``; lines of all live runs decode as one batch."""
        return run_agent(self.writer, self.tools, tasks, self.config.max_steps,
                         self.config.max_observation)


__all__ = ["AgentConfig", "AgentRun", "LineWriter", "ReActAgent", "apply_line", "line_regex",
           "observation", "run_agent"]
