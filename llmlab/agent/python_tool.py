"""The agent's Python tool: run a snippet in a fresh, limited process and return what it printed.

A model's code is untrusted code. Each call runs ``python -I -c`` (isolated mode: no user site,
no environment-driven imports) in a new session, in an empty temporary directory, with a minimal
environment (no variable of the caller's: no keys or tokens), resource limits
(:class:`llmlab.limits.Limits`: memory, CPU seconds, file size, open files) and a wall-clock
timeout after which the whole process group is killed. A snippet that loops, allocates without
end, crashes the interpreter or forks is stopped and reported as an error; the caller survives.
What it cannot do here: cut the network or make the file system read-only (the grader's sandbox
adds namespaces for that; run an agent's tools in a container in production, as OpenAI's code
interpreter and E2B do). Taught in chapter 12 (solutions/12_rag_agents).
"""

from __future__ import annotations

import functools
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field

from llmlab.limits import Limits, set_limits

TOOL_LIMITS = Limits(memory_bytes=1 << 30, cpu_seconds=10, processes=16, file_bytes=1 << 20,
                     open_files=64)


@dataclass(frozen=True)
class PythonResult:
    """What a run gave: ``ok`` (exit status 0 within the limits), ``output`` (stdout, then
    stderr, cut to ``max_output`` characters), ``error`` (why it failed, or "")."""

    ok: bool
    output: str
    error: str = ""


@dataclass(frozen=True)
class PythonTool:
    """``PythonTool()(code)`` -> :class:`PythonResult`."""

    timeout: float = 5.0
    limits: Limits = field(default=TOOL_LIMITS)
    max_output: int = 2000

    def __call__(self, code: str) -> PythonResult:
        if not isinstance(code, str):
            raise ValueError(f"code must be a string, got {type(code).__name__}")
        return run_python(code, self.timeout, self.limits, self.max_output)


def _child_setup(limits: Limits) -> None:
    os.setsid()
    set_limits(limits)
    try:  # die with the parent (Linux)
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGKILL)
    except Exception:  # noqa: BLE001 — best effort off Linux
        pass


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()


def run_python(code: str, timeout: float = 5.0, limits: Limits = TOOL_LIMITS,
               max_output: int = 2000) -> PythonResult:
    """Run ``code`` sandboxed (see the module doc) and report what happened."""
    if timeout <= 0:
        raise ValueError(f"timeout must be > 0 seconds, got {timeout}")
    scratch = tempfile.mkdtemp(prefix="llmlab-tool-")
    env = {"PATH": os.pathsep.join([os.path.dirname(sys.executable), "/usr/bin", "/bin"]),
           "HOME": scratch, "TMPDIR": scratch, "LANG": "C.UTF-8", "PYTHONHASHSEED": "0",
           "PYTHONDONTWRITEBYTECODE": "1", "OMP_NUM_THREADS": "1"}
    try:
        proc = subprocess.Popen([sys.executable, "-I", "-c", code], cwd=scratch, env=env,
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE,
                                preexec_fn=functools.partial(_child_setup, limits))
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            return PythonResult(False, "", f"timed out after {timeout:g} s (killed)")
        finally:
            if proc.poll() is None:
                _kill_group(proc)
        try:  # anything it left running in its session goes too
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    text = (out + err).decode("utf-8", "replace")
    if len(text) > max_output:
        text = text[:max_output] + f"\n... ({len(text) - max_output} more characters cut)"
    if proc.returncode == 0:
        return PythonResult(True, text)
    if proc.returncode < 0:
        name = signal.Signals(-proc.returncode).name
        why = {"SIGXCPU": "CPU time limit", "SIGSEGV": "crashed",
               "SIGKILL": "killed by the system: CPU time limit reached, or out of memory"
               }.get(name, name)
        return PythonResult(False, text, f"stopped by {name} ({why})")
    last = err.decode("utf-8", "replace").strip().splitlines()
    return PythonResult(False, text, last[-1] if last else f"exit status {proc.returncode}")


__all__ = ["TOOL_LIMITS", "PythonResult", "PythonTool", "run_python"]
