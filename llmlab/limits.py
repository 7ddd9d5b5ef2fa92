"""Limits for a child process that runs code nobody reviewed: resource limits, a session of its
own, death with its parent, and a kill that takes everything it started.

The generic piece of a sandbox, shared by the notebook grader's sandbox (which adds namespaces,
cgroups, a private root and a watchdog around it), the execution-based
evaluation of generated programs (:mod:`llmlab.evaluate.execution`) and the agent's Python tool
(:mod:`llmlab.agent.python_tool`). Exceeding a limit fails cleanly (``MemoryError``, ``SIGXCPU``,
``EFBIG``, ``EMFILE``) instead of taking the machine with it. ``processes`` is applied by whoever
can make it bind (``RLIMIT_NPROC`` counts every process of the user, not a child's). POSIX only:
``resource`` and process groups do not exist on Windows.
"""

from __future__ import annotations

import os
import signal
import subprocess
from dataclasses import asdict, dataclass

try:
    import resource
except ImportError:  # Windows
    resource = None

GiB = 1 << 30

_RLIMITS = (("RLIMIT_AS", "memory_bytes"), ("RLIMIT_CPU", "cpu_seconds"),
            ("RLIMIT_FSIZE", "file_bytes"), ("RLIMIT_NOFILE", "open_files"))


@dataclass(frozen=True)
class Limits:
    """Per-process resource limits for code a learner (or a model) wrote."""

    memory_bytes: int = 4 * GiB      # RLIMIT_AS: address space
    cpu_seconds: int = 120           # RLIMIT_CPU
    processes: int = 64              # RLIMIT_NPROC (threads count too)
    file_bytes: int = 16 << 20       # RLIMIT_FSIZE
    open_files: int = 256            # RLIMIT_NOFILE

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


def enforceable() -> list[str]:
    """The :class:`Limits` fields this platform's ``setrlimit`` enforces (all but ``processes``)."""
    if resource is None:
        return []
    return [field for name, field in _RLIMITS if hasattr(resource, name)]


def set_limits(limits: Limits) -> None:
    """In the child, before it runs anything: apply every enforceable limit but ``processes``,
    each clamped to the hard limit (an unprivileged process cannot raise it)."""
    if resource is None:
        return
    for name, field in _RLIMITS:
        which = getattr(resource, name, None)
        if which is None:
            continue
        value = getattr(limits, field)
        _, hard = resource.getrlimit(which)
        if hard != resource.RLIM_INFINITY:
            value = min(value, hard)
        resource.setrlimit(which, (value, value))


def limited_session(limits: Limits) -> None:
    """A ``preexec_fn``: a session of its own (so :func:`kill_session` reaches every process the
    child starts), :func:`set_limits`, and death with the parent (``PR_SET_PDEATHSIG``, Linux)."""
    os.setsid()
    set_limits(limits)
    try:
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:  # not Linux: the parent's kill_session is the only cleanup
        pass


def kill_session(proc: subprocess.Popen) -> None:
    """Kill ``proc``'s whole session (everything it started), then reap it."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass


__all__ = ["GiB", "Limits", "enforceable", "kill_session", "limited_session", "set_limits"]
