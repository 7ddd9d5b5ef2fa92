"""Run a generated program and its tests in a separate, limited process: the verdict of
execution-based evaluation (HumanEval's ``execution.py``, Chen et al., arXiv:2107.03374).

Each candidate runs in a fresh interpreter (``python -I``: no user site, no environment
variables of ours), in an empty temporary directory, in its own session, with resource limits
(address space, CPU seconds, file size, open files — :mod:`llmlab.process_limits`, the same piece
the notebook grader's sandbox uses) and a wall-clock timeout after which the whole session is
killed. Before the candidate runs, the functions that destroy files or start processes are
replaced by ones that raise (HumanEval's ``reliability_guard``). This keeps honest mistakes of a
model — an infinite loop, a huge allocation, ``shutil.rmtree`` — from harming the evaluator; it
is not a security boundary against code written to escape (use a container or a VM for that).
Taught in chapter 11 (solutions/11_eval).
"""

from __future__ import annotations

import functools
import subprocess
import sys
import tempfile
from dataclasses import dataclass

from llmlab.process_limits import GiB, Limits, kill_session, limited_session

DEFAULT_LIMITS = Limits(memory_bytes=1 * GiB, cpu_seconds=10, file_bytes=1 << 20, open_files=64)

_GUARD = r"""
import builtins, os, shutil, subprocess, sys
def _refused(*args, **kwargs):
    raise PermissionError("refused by the evaluation sandbox")
for _mod, _names in ((os, ("kill", "killpg", "system", "putenv", "remove", "removedirs", "rmdir",
                           "unlink", "rename", "renames", "replace", "truncate", "fork",
                           "forkpty", "setuid", "chmod", "chown", "execv", "execve", "spawnv")),
                     (shutil, ("rmtree", "move", "chown")),
                     (subprocess, ("Popen", "run", "call", "check_call", "check_output"))):
    for _name in _names:
        if hasattr(_mod, _name):
            setattr(_mod, _name, _refused)
builtins.exit = builtins.quit = _refused
del _mod, _names, _name
"""


@dataclass(frozen=True)
class ExecutionResult:
    """``status``: "passed", "failed" (an exception or a non-zero exit) or "timed out"."""

    status: str
    detail: str = ""

    @property
    def passed(self) -> bool:
        return self.status == "passed"


def run_program(program: str, timeout: float = 5.0,
                limits: Limits = DEFAULT_LIMITS) -> ExecutionResult:
    """Execute ``program`` (a candidate and its tests, e.g. ``assert`` lines) under limits."""
    if timeout <= 0:
        raise ValueError(f"timeout must be > 0 seconds, got {timeout}")
    with tempfile.TemporaryDirectory(prefix="llmlab-exec-") as scratch:
        env = {"PATH": "/usr/bin:/bin", "HOME": scratch, "TMPDIR": scratch, "LANG": "C.UTF-8",
               "PYTHONHASHSEED": "0", "PYTHONDONTWRITEBYTECODE": "1", "OMP_NUM_THREADS": "1"}
        proc = subprocess.Popen([sys.executable, "-I", "-c", _GUARD + "\n" + "exec(sys.stdin.read())"],
                                cwd=scratch, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True,
                                preexec_fn=functools.partial(limited_session, limits))
        try:
            _, err = proc.communicate(program, timeout=timeout)
        except subprocess.TimeoutExpired:
            kill_session(proc)
            return ExecutionResult("timed out", f"no result after {timeout:g} s")
        finally:
            kill_session(proc)  # anything it left running in its session
    if proc.returncode == 0:
        return ExecutionResult("passed")
    last = err.strip().splitlines()[-1] if err.strip() else f"exit status {proc.returncode}"
    return ExecutionResult("failed", last[:200])


def check_completion(prompt: str, completion: str, tests: str, timeout: float = 5.0,
                     limits: Limits = DEFAULT_LIMITS) -> ExecutionResult:
    """Run ``prompt + completion`` (a function) followed by ``tests``."""
    return run_program(prompt + completion + "\n\n" + tests + "\n", timeout, limits)


__all__ = ["DEFAULT_LIMITS", "ExecutionResult", "check_completion", "run_program"]
