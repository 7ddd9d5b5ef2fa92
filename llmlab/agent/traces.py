"""Synthetic tool-use tasks and the traces that teach a small model to call tools.

A base model has never seen a ``Call:`` line; it learns the format from demonstrations, the way
Toolformer (Schick et al., arXiv:2302.04761) and the function-calling data of open models
(Gorilla, arXiv:2305.15334; ToolLLM, arXiv:2307.16789) teach it: a task, the calls that solve
it, their results, the answer. Two families, each with a checkable answer:

- **arithmetic**: "What is 417 * 23 + 8?" — call ``run_python`` with ``print(417 * 23 + 8)``,
  answer what it printed;
- **lookup**: a docstring of the corpus — call ``search`` with it, answer the id of the first
  result.

Training and held-out tasks draw different numbers and different corpus pairs (by ``split``),
so a held-out success is a call the model composed, not one it memorised. Only the lines the
model writes carry a loss (``Thought:``, ``Call:``, ``Answer:``), not the task or the results.
Taught in chapter 12 (solutions/12_rag_agents).
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

IGNORE_INDEX = -100


@dataclass(frozen=True)
class Task:
    """A question, the family it belongs to, and the answer a correct run ends with."""

    question: str
    family: str
    answer: str


def arithmetic_tasks(n: int, seed: int) -> list[Task]:
    """``n`` tasks "What is a op b [op c]?" with their exact integer answers."""
    rng, out = random.Random(seed), []
    for _ in range(n):
        a, b, c = rng.randint(10, 999), rng.randint(2, 99), rng.randint(1, 99)
        expr = rng.choice([f"{a} * {b}", f"{a} + {b} * {c}", f"{a} * {b} - {c}", f"{a} - {b} + {c}"])
        out.append(Task(f"What is {expr}?", "arithmetic", str(eval(expr))))  # noqa: S307 — digits and + - * only
    return out


def lookup_tasks(queries: Sequence[tuple[str, str]], n: int, seed: int) -> list[Task]:
    """``n`` tasks "Find the function: <docstring>" from (query, answer id) pairs."""
    rng = random.Random(seed)
    picked = rng.sample(list(queries), min(n, len(queries)))
    return [Task(f"Find the function: {q}", "lookup", answer) for q, answer in picked]


def solution_lines(task: Task, observe: Callable[[str, dict], str]) -> list[tuple[str, bool]]:
    """The trace that solves ``task``: (line, written by the model?) pairs. ``observe(tool,
    arguments)`` runs the tool (so a trace shows real results, formatted as the loop does)."""
    if task.family == "arithmetic":
        expr = task.question[len("What is "):-1]
        thought, name, args = "compute it with Python", "run_python", {"code": f"print({expr})"}
    elif task.family == "lookup":
        query = task.question[len("Find the function: "):]
        thought, name, args = "search the corpus", "search", {"query": query}
    else:
        raise ValueError(f"unknown task family {task.family!r}")
    result = observe(name, args)
    answer = result.split(" | ")[0].split()[0] if result else ""
    call = json.dumps({"name": name, "arguments": args}, separators=(",", ":"), ensure_ascii=False)
    return [(f"Task: {task.question}", False), (f"Thought: {thought}", True),
            (f"Call: {call}", True), (f"Result: {result}", False), (f"Answer: {answer}", True)]


def trace_example(tokenizer, lines: Sequence[tuple[str, bool]],
                  max_len: int = 256) -> tuple[list[int], list[int]]:
    """Token ids and next-token labels of a trace: ``labels[t] = ids[t + 1]`` where token t+1
    belongs to a model-written line (its newline included), else -100; cut to ``max_len``."""
    ids, trained = [], []
    for text, by_model in lines:
        piece = tokenizer.encode(text + "\n")
        ids += piece
        trained += [by_model] * len(piece)
    ids, trained = ids[:max_len], trained[:max_len]
    labels = [ids[t + 1] if trained[t + 1] else IGNORE_INDEX for t in range(len(ids) - 1)]
    return ids, labels + [IGNORE_INDEX]


__all__ = ["Task", "arithmetic_tasks", "lookup_tasks", "solution_lines", "trace_example"]
