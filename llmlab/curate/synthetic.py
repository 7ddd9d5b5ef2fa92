"""Synthetic data: sample from a model, keep what a verifier accepts.

When text runs out, or a skill is rare in it, pipelines generate data with a model and filter it
with something that can tell right from wrong: unit tests for code (Code Llama's self-instruct
set, Rozière et al., arXiv:2308.12950 §2.5; OSS-Instruct; AlphaCode's filtering on example tests),
an answer checker for maths (rejection sampling in Llama 3, Grattafiori et al.,
arXiv:2407.21783 §4.2.3), a reward model for chat. Unverified samples from a small model are
mostly wrong; the filter is what makes them data.

Here the book's model (chapter 02, trained on Python source) completes the body of small
functions from their signature and docstring; each completion is checked in three steps —
it parses, it runs, it passes the task's tests — by executing it in a separate Python process
(isolated mode, CPU and memory limits, a timeout, an empty working directory), never in this
one. Taught in chapter 10 (solutions/10_data).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch

from llmlab.model.sampling import SamplingParams


@dataclass(frozen=True)
class Task:
    """A function to write (its name, the prompt: signature and docstring, and test cases), or
    with ``name=None`` one line of code whose only test is that it runs."""

    name: str | None
    prompt: str
    tests: tuple[tuple[tuple, object], ...] = ()  # ((args, expected), ...)


TASKS = (
    Task("identity", 'def identity(x):\n    """Return x unchanged."""\n    return',
         (((3,), 3), (("a",), "a"), (([1],), [1]))),
    Task("length", 'def length(items):\n    """Return the number of items."""\n    return',
         ((([1, 2, 3],), 3), (("",), 0), (((4,),), 1))),
    Task("is_none", 'def is_none(value):\n    """Return True if value is None."""\n    return',
         (((None,), True), ((0,), False), (("",), False))),
    Task("add", 'def add(a, b):\n    """Return the sum of a and b."""\n    return',
         (((1, 2), 3), ((-1, 1), 0), ((2.5, 0.5), 3.0))),
    Task("negate", 'def negate(flag):\n    """Return the opposite of flag."""\n    return',
         (((True,), False), ((False,), True))),
    Task("first", 'def first(items):\n    """Return the first item of items."""\n    return',
         ((([4, 5],), 4), (("xy",), "x"))),
)


SAMPLING = SamplingParams(max_new_tokens=24, temperature=0.8, top_k=50, seed=0)


def sample_completions(model: torch.nn.Module, tokenizer, prompt: str, n: int,
                       params: SamplingParams | None = None, **sampling) -> list[str]:
    """``n`` sampled continuations of ``prompt`` (the text after it), from the model's
    ``generate``: ``params`` (default 24 new tokens at temperature 0.8, top-k 50, seed 0) with
    keyword overrides named like its fields, as ``llmlab.model.generate`` takes them."""
    from llmlab.model import generate

    params = replace(params or SAMPLING, **sampling)
    ids = torch.tensor([tokenizer.encode(prompt)] * n)
    out = generate(model, ids, params)
    return [tokenizer.decode(row[ids.shape[1]:].tolist()) for row in out]


STATEMENTS = tuple(Task(None, p) for p in (
    "x = [", "import ", "values = {", "for i in range(", "name = str(", "total = sum(",
    "print(", "items = sorted(", "n = len(", "text = '", "result = max(", "pairs = list(zip(",
))


def function_source(prompt: str, completion: str) -> str:
    """The prompt and the completion up to the end of the function: the first non-blank line
    back at column 0 (or the end). A one-line prompt keeps its first line only."""
    if "\n" not in prompt:
        return (prompt + completion).split("\n")[0] + "\n"
    lines = (prompt + completion).split("\n")
    body = [lines[0]]
    for line in lines[1:]:
        if line.strip() and not line.startswith((" ", "\t")):
            break
        body.append(line)
    return "\n".join(body).rstrip() + "\n"


_HARNESS = r"""
import json, resource, signal, sys
resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))
jobs = json.loads(sys.stdin.read())
def alarm(*_):
    raise TimeoutError("timeout")
signal.signal(signal.SIGALRM, alarm)
out = []
for job in jobs:
    verdict = {"parses": False, "runs": False, "passes": False}
    try:
        code = compile(job["source"], "<sample>", "exec")
        verdict["parses"] = True
        signal.setitimer(signal.ITIMER_REAL, job["timeout"])
        scope = {}
        exec(code, scope)
        if job["name"] is None:
            verdict["runs"] = verdict["passes"] = True
        else:
            fn = scope[job["name"]]
            results = [fn(*args) for args, _ in job["tests"]]
            verdict["runs"] = True
            verdict["passes"] = all(r == want and type(r) is type(want)
                                    for r, (_, want) in zip(results, job["tests"]))
    except BaseException:
        pass
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    out.append(verdict)
print(json.dumps(out))
"""


def verify(sources: Sequence[str], task: Task, timeout: float = 1.0) -> list[dict[str, bool]]:
    """For each source: does it parse, define ``task.name`` and run on the tests' inputs, and
    return exactly the expected values? (For a one-line task: does it parse and run.) Executed in
    one isolated child process with a 1 GiB memory limit and ``timeout`` seconds per sample."""
    jobs = [{"source": s, "name": task.name, "timeout": timeout,
             "tests": [[list(args), want] for args, want in task.tests]} for s in sources]
    with tempfile.TemporaryDirectory() as cwd:
        proc = subprocess.run([sys.executable, "-I", "-c", _HARNESS], input=json.dumps(jobs),
                              capture_output=True, text=True, cwd=cwd,
                              timeout=30 + timeout * len(jobs))
    if proc.returncode != 0:
        raise RuntimeError(f"the verifier process failed: {proc.stderr[-500:]}")
    return json.loads(proc.stdout)


def synthesize(model: torch.nn.Module, tokenizer, tasks: Sequence[Task] = TASKS,
               per_task: int = 16, seed: int = 0, **sampling) -> list[dict]:
    """Sample ``per_task`` completions per task and verify them: one record per sample with
    ``task``, ``source`` and the verdicts ``parses``, ``runs``, ``passes``."""
    records = []
    for k, task in enumerate(tasks):
        sources = [function_source(task.prompt, c) for c in
                   sample_completions(model, tokenizer, task.prompt, per_task, seed=seed + k, **sampling)]
        for source, verdict in zip(sources, verify(sources, task)):
            records.append({"task": task.name or task.prompt, "source": source, **verdict})
    return records
