"""Run a generated program and its tests in a separate, limited process: the verdict of
execution-based evaluation (HumanEval's ``execution.py``, Chen et al., arXiv:2107.03374).

Each candidate runs in a fresh interpreter (``python -I``: no user site, no environment
variables of ours), in an empty temporary directory, in its own session, with resource limits
(address space, CPU seconds, file size, open files — :mod:`llmlab.limits`, the same piece
the notebook grader's sandbox uses) and a wall-clock timeout after which the whole session is
killed. Before the candidate runs, the functions that destroy files or start processes are
replaced by ones that raise (HumanEval's ``reliability_guard``). This keeps honest mistakes of a
model — an infinite loop, a huge allocation, ``shutil.rmtree`` — from harming the evaluator; it
is not a security boundary against code written to escape (use a container or a VM for that).
Taught in chapter 11 (solutions/11_eval).
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass

from llmlab.limits import GiB, Limits, kill_session, limited_session

DEFAULT_LIMITS = Limits(memory_bytes=1 * GiB, cpu_seconds=10, file_bytes=1 << 20, open_files=64)

_GUARD = r"""
import builtins, os, shutil, subprocess, sys
def _refused(*args, **kwargs):
    raise PermissionError("refused by the evaluation sandbox")
for _mod, _names in ((os, ("kill", "killpg", "system", "putenv", "remove", "removedirs", "rmdir",
                           "unlink", "rename", "renames", "replace", "truncate", "fork", "_exit",
                           "forkpty", "setuid", "chmod", "chown", "execv", "execve", "spawnv")),
                     (shutil, ("rmtree", "move", "chown")),
                     (subprocess, ("Popen", "run", "call", "check_call", "check_output"))):
    for _name in _names:
        if hasattr(_mod, _name):
            setattr(_mod, _name, _refused)
builtins.exit = builtins.quit = _refused
del _mod, _names, _name
"""


_SINGLE = r"""
try:
    exec(compile(sys.stdin.read(), "<candidate>", "exec"), {"__name__": "__candidate__"})
except SystemExit as _exc:  # exiting early is not passing (HumanEval counts it as a failure)
    raise SystemExit(f"SystemExit({_exc.code!r}) before the tests finished") from None
"""


def _env(scratch: str) -> dict[str, str]:
    """The only variables a candidate's process gets."""
    return {"PATH": "/usr/bin:/bin", "HOME": scratch, "TMPDIR": scratch, "LANG": "C.UTF-8",
            "PYTHONHASHSEED": "0", "PYTHONDONTWRITEBYTECODE": "1", "OMP_NUM_THREADS": "1"}


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
        proc = subprocess.Popen([sys.executable, "-I", "-c", _GUARD + _SINGLE],
                                cwd=scratch, env=_env(scratch), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
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


_BATCH = r"""
import json, signal
class _TimedOut(BaseException):  # not an Exception: a candidate's `except Exception` cannot keep it
    pass
def _alarm(signum, frame):
    raise _TimedOut()
signal.signal(signal.SIGALRM, _alarm)
_job = json.loads(sys.stdin.readline())
for _program in _job["programs"]:
    signal.setitimer(signal.ITIMER_REAL, _job["timeout"])
    try:
        exec(compile(_program, "<candidate>", "exec"), {"__name__": "__candidate__"})
        _status = "passed"
    except _TimedOut:
        _status = "timed out"
    except BaseException as _exc:
        _status = "failed"
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    print(_job["nonce"] + _status, flush=True)
"""


def run_programs(programs: list[str], timeout: float = 5.0,
                 limits: Limits = DEFAULT_LIMITS) -> list[ExecutionResult]:
    """Execute many programs in *one* limited process, each in a fresh namespace with its own
    ``timeout`` (``SIGALRM``): far cheaper than a process each when most candidates fail fast.
    Isolation between candidates is weaker (one could change a builtin the next one uses), so a
    candidate that passes here can be confirmed with :func:`run_program`. A crash of the process
    (a segfault, ``os._exit``, the process's CPU-time limit) fails the candidate it happened in,
    and the rest run again in a new process."""
    if timeout <= 0:
        raise ValueError(f"timeout must be > 0 seconds, got {timeout}")
    results: list[ExecutionResult] = []
    while len(results) < len(programs):
        rest = programs[len(results):]
        out, status = _run_batch(rest, timeout, limits)
        results += [ExecutionResult(s) for s in out]
        if len(out) < len(rest):  # the process died in the candidate after the last verdict
            results.append(ExecutionResult("timed out" if status == "timed out" else "failed",
                                           "the process ended during this candidate"))
    return results


def _run_batch(programs: list[str], timeout: float, limits: Limits) -> tuple[list[str], str]:
    import json

    nonce = os.urandom(8).hex() + ":"  # a candidate's ordinary prints are not taken for verdicts
    job = json.dumps({"programs": programs, "timeout": timeout, "nonce": nonce}) + "\n"
    with tempfile.TemporaryDirectory(prefix="llmlab-exec-") as scratch:
        proc = subprocess.Popen([sys.executable, "-I", "-c", _GUARD + _BATCH], cwd=scratch,
                                env=_env(scratch), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True,
                                preexec_fn=functools.partial(limited_session, limits))
        status = "done"
        try:
            out, _ = proc.communicate(job, timeout=timeout * len(programs) + 5)
        except subprocess.TimeoutExpired:  # a candidate that swallows even BaseException
            kill_session(proc)
            out, _ = proc.communicate()  # the verdicts printed before it
            status = "timed out"
        finally:
            kill_session(proc)
    verdicts = [line[len(nonce):] for line in out.splitlines() if line.startswith(nonce)]
    return verdicts[:len(programs)], status


def check_completion(prompt: str, completion: str, tests: str, timeout: float = 5.0,
                     limits: Limits = DEFAULT_LIMITS) -> ExecutionResult:
    """Run ``prompt + completion`` (a function) followed by ``tests``."""
    return run_program(prompt + completion + "\n\n" + tests + "\n", timeout, limits)


__all__ = ["DEFAULT_LIMITS", "ExecutionResult", "check_completion", "run_program", "run_programs"]
