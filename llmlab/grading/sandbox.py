"""Run a process that executes a learner's code: limited, isolated, and never outliving the grade.

``launch(cmd, limits)`` starts ``cmd``:

- in its own session (``setsid``), so the grader kills it and anything it started with one
  ``killpg``; with ``PR_SET_PDEATHSIG`` so it dies with the grader;
- where the grader runs as root and may create cgroups (v1 or v2 ``pids``), in a cgroup of its
  own: ``pids.max`` binds every process in it (root ignores ``RLIMIT_NPROC``), and :func:`kill`
  kills every member, even one that left the session;
- with resource limits (``Limits``): address space, CPU seconds, processes, file size and open
  files — exceeding one fails cleanly (``MemoryError``, ``SIGXCPU``, ``EAGAIN``, ``EFBIG``);
- with a minimal environment (no variable of the grader's is inherited: no tokens, no keys);
- in an empty scratch directory (no solutions in reach of a relative path);
- without network, in a new network namespace, and with the repository, the interpreter and the
  grader's files read-only (a mount namespace), when the kernel allows unprivileged user
  namespaces (``unshare --user --net --mount``); when it does not, the process has the host's
  network and file system, :func:`network_isolated` says so and the grade report records it.

``Workspace`` is the grader's temporary directory; a small watchdog process removes it (and
kills the sandboxes still registered in it) when the grader exits, even by ``SIGKILL``.
"""

from __future__ import annotations

import functools
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from llmlab.limits import GiB, Limits, set_limits  # noqa: F401 (re-exported)

_RO_SCRIPT = ('while [ "$1" != "--" ]; do mount --bind "$1" "$1" && '
              'mount -o remount,bind,ro "$1" || exit 97; shift; done; shift; exec "$@"')


def _namespace_cmd(readonly: list[str]) -> list[str]:
    unshare = shutil.which("unshare") or "unshare"
    return [unshare, "--user", "--map-root-user", "--net", "--mount", "--", "sh", "-c", _RO_SCRIPT,
            "sh", *readonly, "--"]


@functools.lru_cache(maxsize=1)
def network_isolated() -> bool:
    """Whether processes can be started without network and with read-only paths (unprivileged
    user, network and mount namespaces)."""
    if not shutil.which("unshare") or not sys.platform.startswith("linux"):
        return False
    probe = tempfile.mkdtemp(prefix="llmlab-probe-")
    try:
        proc = subprocess.run([*_namespace_cmd([probe]), "sh", "-c", f"! touch {probe}/x"],
                              capture_output=True, timeout=20)
        return proc.returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False
    finally:
        shutil.rmtree(probe, ignore_errors=True)


NOBODY = 65534


@functools.lru_cache(maxsize=1)
def drops_privileges() -> bool:
    """Whether the grader runs as root and its interpreter can run as ``nobody``: then sandboxes
    run as ``nobody`` (who cannot write the repository or the venv, and whom RLIMIT_NPROC binds)."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return False
    try:
        proc = subprocess.run([sys.executable, "-c", "pass"], capture_output=True, timeout=30,
                              preexec_fn=_become_nobody)
    except (OSError, subprocess.SubprocessError):
        return False
    return proc.returncode == 0


def _become_nobody() -> None:
    os.setgroups([])
    os.setgid(NOBODY)
    os.setuid(NOBODY)


def minimal_env(home: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The only variables a sandboxed process gets."""
    import llmlab

    root = str(Path(llmlab.__file__).resolve().parent.parent)
    env = {
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), "/usr/bin", "/bin"]),
        "HOME": str(home), "TMPDIR": str(home), "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8",
        "PYTHONHASHSEED": "0", "PYTHONDONTWRITEBYTECODE": "1", "PYTHONNOUSERSITE": "1",
        "PYTHONPATH": root, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "MPLBACKEND": "Agg",
    }
    env.update(extra or {})
    return env


# ---------------------------------------------------------------- a pids cgroup per sandbox

@functools.lru_cache(maxsize=1)
def cgroup_parent() -> Path | None:
    """Where this process may create ``pids`` cgroups (its own cgroup, v1 or v2), or None."""
    if not sys.platform.startswith("linux") or os.geteuid() != 0:
        return None
    try:
        mounts = [line.split() for line in Path("/proc/self/mounts").read_text().splitlines()]
        groups = [line.split(":", 2) for line in Path("/proc/self/cgroup").read_text().splitlines()]
    except OSError:
        return None
    for hierarchy, controllers, path in groups:
        for _, point, fstype, options, *_ in mounts:
            if (fstype == "cgroup" and "pids" in options.split(",")
                    and "pids" in controllers.split(",")) or \
                    (fstype == "cgroup2" and hierarchy == "0"):
                parent = Path(point) / path.strip().lstrip("/")
                group = _new_group(parent, 1)
                if group is not None:
                    remove_group(group)
                    return parent
    return None


def _new_group(parent: Path, processes: int) -> Path | None:
    try:
        group = Path(tempfile.mkdtemp(prefix="llmlab-", dir=parent))
    except OSError:
        return None
    try:
        (group / "pids.max").write_text(str(processes))
    except OSError:
        remove_group(group)
        return None
    return group


def new_group(processes: int) -> Path | None:
    """A fresh cgroup whose members may be at most ``processes`` (None where unavailable)."""
    try:
        parent = cgroup_parent()
        return _new_group(parent, processes) if parent else None
    except OSError:
        return None


def remove_group(group: Path, rounds: int = 50) -> None:
    """Kill every process in ``group`` (new ones too, until it is empty), then remove it."""
    import time

    for _ in range(rounds):
        try:
            pids = [int(p) for p in (group / "cgroup.procs").read_text().split()]
        except (OSError, ValueError):
            pids = []
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        try:
            group.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError:
            time.sleep(0.02)


def _preexec(limits: Limits, drop: bool, group: Path | None) -> None:
    os.setsid()
    if group is not None:  # join before dropping privileges: root may write cgroup.procs
        fd = os.open(group / "cgroup.procs", os.O_WRONLY)
        try:
            os.write(fd, b"0")
        finally:
            os.close(fd)
    set_limits(limits)
    try:
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:
        pass
    if drop:
        _become_nobody()


def launch(cmd: list[str], cwd: Path, env: dict[str, str], limits: Limits,
           readonly: list[Path] = (), **popen: object) -> subprocess.Popen:  # type: ignore[assignment]
    """Start ``cmd`` sandboxed (see the module doc). The caller must :func:`kill` it.

    ``readonly``: paths made read-only for the process (where namespaces are available).
    """
    if network_isolated():
        # RLIMIT_NPROC counts the processes of a user; inside a fresh user namespace those are
        # the sandbox's own, so it is set there (by prlimit, after the namespace exists).
        prlimit = shutil.which("prlimit")
        inner = [prlimit, f"--nproc={limits.processes}", "--", *cmd] if prlimit else cmd
        paths = [str(p) for p in readonly if Path(p).exists()]
        cmd = [*_namespace_cmd(paths), *inner]
    drop = drops_privileges()
    if drop:
        os.chown(cwd, NOBODY, NOBODY)
    group = new_group(limits.processes)
    try:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env,
                                preexec_fn=functools.partial(_preexec, limits, drop, group),
                                **popen)  # type: ignore[call-overload]
    except BaseException:
        if group is not None:
            remove_group(group)
        raise
    proc.cgroup = group  # type: ignore[attr-defined]
    return proc


def process_limit_binds() -> bool:
    """Whether a sandbox's process limit is enforced by the kernel here: RLIMIT_NPROC binds any
    user but root (and root's sandboxes run as ``nobody`` where they can), a cgroup binds all."""
    return os.geteuid() != 0 or drops_privileges() or cgroup_parent() is not None


def protected_paths() -> list[Path]:
    """What a learner's code must not change: the package, the repository, the interpreter."""
    import llmlab

    paths = {Path(llmlab.__file__).resolve().parents[1], Path(sys.prefix).resolve(),
             Path(sys.base_prefix).resolve(), Path(sys.executable).resolve().parents[1]}
    return sorted(paths)


def kill(proc: subprocess.Popen) -> None:
    """Kill ``proc``'s whole session (everything it started), then reap it."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass
    group = getattr(proc, "cgroup", None)
    if group is not None:  # members that left the session, and the group itself
        remove_group(group)


_WATCHDOG = r"""
import os, shutil, signal, sys, time
root = sys.argv[1]
sys.stdin.buffer.read()          # returns when the grader exits, however it exits
try:
    for name in os.listdir(os.path.join(root, "pids")):
        try:
            os.killpg(int(name), signal.SIGKILL)
        except (ValueError, OSError):
            pass
        try:
            with open(os.path.join(root, "pids", name)) as f:
                group = f.read().strip()
        except OSError:
            group = ""
        for _ in range(50 if group else 0):  # the sandbox's cgroup: kill its members, remove it
            try:
                with open(os.path.join(group, "cgroup.procs")) as f:
                    for pid in f.read().split():
                        try:
                            os.kill(int(pid), signal.SIGKILL)
                        except (ValueError, OSError):
                            pass
                os.rmdir(group)
                break
            except FileNotFoundError:
                break
            except OSError:
                time.sleep(0.02)
finally:
    shutil.rmtree(root, ignore_errors=True)
"""


class Workspace:
    """A temporary directory removed when the grader exits — normally, or killed."""

    def __init__(self, prefix: str = "llmlab-grade-") -> None:
        self.root = Path(tempfile.mkdtemp(prefix=prefix))
        (self.root / "pids").mkdir()
        self._watchdog = subprocess.Popen(
            [sys.executable, "-c", _WATCHDOG, str(self.root)], stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")})

    def scratch(self, name: str) -> Path:
        path = Path(tempfile.mkdtemp(prefix=name, dir=self.root))
        return path

    def register(self, proc: subprocess.Popen) -> None:
        group = getattr(proc, "cgroup", None)
        (self.root / "pids" / str(proc.pid)).write_text(str(group or ""))

    def unregister(self, proc: subprocess.Popen) -> None:
        (self.root / "pids" / str(proc.pid)).unlink(missing_ok=True)

    def close(self) -> None:
        if self._watchdog.stdin:
            self._watchdog.stdin.close()  # the watchdog cleans up and exits
        try:
            self._watchdog.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> Workspace:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
