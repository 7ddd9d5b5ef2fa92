"""Resource limits for a child process that runs code nobody reviewed.

One dataclass and the function a child calls before it runs that code (``preexec_fn``): address
space, CPU seconds, file size and open files are capped with ``setrlimit``, so exceeding one
fails cleanly (``MemoryError``, ``SIGXCPU``, ``EFBIG``, ``EMFILE``) instead of taking the machine
with it. ``processes`` is applied by whoever can make it bind (``RLIMIT_NPROC`` counts a user's
processes, not a child's): the grader's sandbox and the agent's Python tool each do so their
way. Used by the grader's sandbox and by :mod:`llmlab.agent.python_tool`.
"""

from __future__ import annotations

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


def set_limits(limits: Limits) -> None:
    """Apply ``limits`` (all but ``processes``) to the calling process: call it in the child."""
    import resource

    for which, value in ((resource.RLIMIT_AS, limits.memory_bytes),
                         (resource.RLIMIT_CPU, limits.cpu_seconds),
                         (resource.RLIMIT_FSIZE, limits.file_bytes),
                         (resource.RLIMIT_NOFILE, limits.open_files)):
        resource.setrlimit(which, (value, value))


__all__ = ["GiB", "Limits", "set_limits"]
