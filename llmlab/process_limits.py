"""Limits for a child process that runs code nobody vetted: resource limits, its own session,
death with its parent, and a kill that takes everything it started.

This is the generic piece of a sandbox, shared by the notebook grader (which adds namespaces,
cgroups and a watchdog around it, ``llmlab.grading.sandbox``) and by the execution-based
evaluation of generated programs (``llmlab.evaluate.execution``). POSIX only: ``resource`` and
process groups do not exist on Windows.
"""

from __future__ import annotations

import os
import resource
import signal
import subprocess
from dataclasses import asdict, dataclass

GiB = 1 << 30


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


def apply_limits(limits: Limits) -> None:
    """In the child, before it runs anything: set the resource limits (exceeding one fails cleanly:
    ``MemoryError``, ``SIGXCPU``, ``EFBIG``, ``EMFILE``) and die with the parent
    (``PR_SET_PDEATHSIG``, Linux). RLIMIT_NPROC is left to the caller: it counts every process of
    the user, so it is set where the child's processes are its own (a user namespace, a cgroup)."""
    for which, value in ((resource.RLIMIT_AS, limits.memory_bytes),
                         (resource.RLIMIT_CPU, limits.cpu_seconds),
                         (resource.RLIMIT_FSIZE, limits.file_bytes),
                         (resource.RLIMIT_NOFILE, limits.open_files)):
        resource.setrlimit(which, (value, value))
    try:
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:
        pass


def limited_session(limits: Limits) -> None:
    """A ``preexec_fn``: a session of its own (so :func:`kill_session` reaches every process the
    child starts) and :func:`apply_limits`."""
    os.setsid()
    apply_limits(limits)


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


__all__ = ["Limits", "apply_limits", "kill_session", "limited_session"]
