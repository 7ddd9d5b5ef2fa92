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
- where the kernel allows unprivileged user namespaces, in namespaces of its own (see
  :func:`isolation`): without network, with its own process IDs and ``/proc`` (no other process
  is visible, so no other process's memory, environment, descriptors or root), and in a private
  root file system that holds only the system directories, the interpreter, the ``llmlab``
  package (all read-only) and its scratch directory — not the home directory, the repository's
  ``solutions/`` or ``tests/``, the grader's temporary files or caches, nor anything else; the
  mounts are locked (the process has no privilege left to undo them). Where a private root
  cannot be built, the repository, the interpreter and the grader's files are read-only and the
  rest of the file system is visible; without user namespaces, the process has the host's
  network and file system (:func:`network_isolated` and :func:`files_isolated` say which, and
  the grade report records it).

Each of these is a feature of the platform, checked before it is used (:func:`features`);
where one is missing, grading still runs, with the weaker guarantee :func:`weaker_guarantees`
states (and the grade report records): off Linux, judges get no namespaces (the machine's
network and files), no cgroup, no ``PR_SET_PDEATHSIG`` (the workspace's watchdog still kills
them when the grader dies) and the grader stays dumpable; without ``resource``, no resource
limit (the time limits, kept by the grader, still stop a judge).

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
import threading
from pathlib import Path

try:
    import resource
except ImportError:  # not a POSIX system: no resource limits (see weaker_guarantees)
    resource = None  # type: ignore[assignment]

from llmlab.limits import Limits, enforceable, kill_session, set_limits

_RO_SCRIPT = ('while [ "$1" != "--" ]; do mount --bind "$1" "$1" && '
              'mount -o remount,bind,ro "$1" || exit 97; shift; done; shift; exec "$@"')

# Builds the private root on the empty directory $1 (a tmpfs, in the new mount namespace), with a
# fresh /proc (of the new PID namespace), /tmp and /dev/shm, the device nodes and directories its
# entries name, and the scratch directory $2; pivots into it, detaches the old root, and execs
# the rest of its arguments. Entries: "r PATH FLAGS" (read-only, keeping the mount's locked
# FLAGS), "w PATH" (writable), "l PATH TARGET" (a symlink), "d PATH" (a device node).
_PRIVATE_ROOT_SCRIPT = r"""set -e
new=$1; scratch=$2; shift 2
saved=$PATH; PATH=/usr/sbin:/sbin:$PATH
mount -t tmpfs -o mode=755 llmlab-judge "$new"
mkdir -p "$new/proc" "$new/tmp" "$new/dev/shm" "$new/.old"
mount -t proc -o nosuid,nodev,noexec proc "$new/proc"
mount -t tmpfs -o mode=1777,size=64m tmpfs "$new/tmp"
mount -t tmpfs -o mode=1777,size=64m tmpfs "$new/dev/shm"
ln -s /proc/self/fd "$new/dev/fd"
while [ "$1" != "--" ]; do
  kind=$1; path=$2; shift 2
  case $kind in
    l) mkdir -p "$new$(dirname "$path")"; ln -s "$1" "$new$path"; shift ;;
    r) mkdir -p "$new$path"; mount --rbind "$path" "$new$path"
       mount -o "remount,bind,ro$1" "$new$path"; shift ;;
    w) mkdir -p "$new$path"; mount --rbind "$path" "$new$path" ;;
    d) mkdir -p "$new$(dirname "$path")"; touch "$new$path"; mount --bind "$path" "$new$path" ;;
  esac
done
shift
cd "$new"
pivot_root . .old
umount -l /.old
rmdir /.old
mount -o remount,bind,ro /
cd "$scratch"
PATH=$saved
exec "$@"
"""

SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc",
               "/sys/devices/system/cpu", "/sys/devices/system/node")
DEVICES = ("/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom")
_LOCKED_FLAGS = ("nosuid", "nodev", "noexec", "noatime", "nodiratime", "relatime")


def _unshare() -> str | None:
    """util-linux's ``unshare`` (Linux only), or None."""
    return shutil.which("unshare") if sys.platform.startswith("linux") else None


def _prlimit() -> str | None:
    """util-linux's ``prlimit`` (sets RLIMIT_NPROC inside a user namespace), or None."""
    return shutil.which("prlimit") if sys.platform.startswith("linux") else None


def _prctl():  # noqa: ANN202 - a ctypes function
    """libc's ``prctl`` (Linux only), or None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


def _namespace_cmd(readonly: list[str]) -> list[str]:
    unshare = _unshare() or "unshare"
    return [unshare, "--user", "--map-root-user", "--net", "--mount", "--", "sh", "-c", _RO_SCRIPT,
            "sh", *readonly, "--"]


def _mount_flags(path: Path) -> str:
    """",nosuid,nodev,..." — the per-mount flags of the mount holding ``path`` (a remount in a
    user namespace must keep them)."""
    best, flags = "", ""
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return ""
    for line in lines:
        fields = line.split()
        point = fields[4].replace("\\040", " ")
        inside = str(path) == point or str(path).startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best):
            best = point
            flags = "".join("," + f for f in fields[5].split(",") if f in _LOCKED_FLAGS)
    return flags


def judge_view() -> list[Path]:
    """What a judge sees besides the system directories: the interpreter and the packages of
    the ``llmlab`` distribution (``llmlab`` and the courseware the chapters' cells import)."""
    paths = [Path(sys.prefix), Path(sys.base_prefix), Path(sys.exec_prefix),
             Path(sys.base_exec_prefix), Path(sys.executable).parent, *shipped_packages()]
    return sorted({q for p in paths for q in (p.absolute(), p.resolve())})


def shipped_packages() -> list[Path]:
    """The folder of each top-level package the ``llmlab`` distribution installs (its
    ``top_level.txt``); ``llmlab``'s own folder always."""
    import importlib.metadata
    import importlib.util

    import llmlab

    out = [Path(llmlab.__file__).parent]
    try:
        names = (importlib.metadata.distribution("llmlab").read_text("top_level.txt") or "").split()
    except importlib.metadata.PackageNotFoundError:  # run from a checkout that is not installed
        names = []
    for name in names:
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.submodule_search_locations:
            out += [Path(p) for p in spec.submodule_search_locations]
    return out


def _private_root_entries(scratch: Path) -> list[str]:
    entries: list[str] = []
    bound: list[Path] = []

    def covered(p: Path) -> bool:
        return any(p == b or b in p.parents for b in bound)

    for name in SYSTEM_DIRS:
        path = Path(name)
        if path.is_symlink():
            entries += ["l", name, os.readlink(path)]
        elif path.is_dir():
            entries += ["r", name, _mount_flags(path)]
            bound.append(path)
    for path in judge_view():
        if path.is_dir() and not covered(path):
            entries += ["r", str(path), _mount_flags(path.resolve())]
            bound.append(path)
    for name in DEVICES:
        if Path(name).exists():
            entries += ["d", name]
    return [*entries, "w", str(scratch)]


def _private_root_cmd(scratch: Path, processes: int) -> list[str]:
    """The command prefix that runs a command in a private root (see the module doc)."""
    unshare = _unshare() or "unshare"
    new_root = scratch.with_name(scratch.name + ".root")
    new_root.mkdir(exist_ok=True)
    inner = [unshare, "--user", "--mount", "--"]  # drops every privilege; locks the mounts
    prlimit = _prlimit()
    if prlimit:
        inner += [prlimit, f"--nproc={processes}", "--"]
    return [unshare, "--user", "--map-root-user", "--net", "--mount", "--pid", "--fork",
            "--kill-child", "--", "sh", "-c", _PRIVATE_ROOT_SCRIPT, "sh", str(new_root),
            str(scratch), *_private_root_entries(scratch), "--", *inner]


def network_isolated() -> bool:
    """Whether processes can be started without network and with read-only paths (unprivileged
    user, network and mount namespaces)."""
    return _unshare() is not None and _namespaces_work()


@functools.lru_cache(maxsize=1)
def _namespaces_work() -> bool:
    probe = tempfile.mkdtemp(prefix="llmlab-probe-")
    try:
        proc = subprocess.run([*_namespace_cmd([probe]), "sh", "-c", f"! touch {probe}/x"],
                              capture_output=True, timeout=20)
        return proc.returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False
    finally:
        shutil.rmtree(probe, ignore_errors=True)


def files_isolated() -> bool:
    """Whether sandboxes get a private root (see the module doc): the files a judge can read are
    then the system directories, the interpreter, ``llmlab`` and its scratch directory only."""
    return network_isolated() and _private_root_works()


@functools.lru_cache(maxsize=1)
def _private_root_works() -> bool:
    probe = Path(tempfile.mkdtemp(prefix="llmlab-probe-"))
    try:
        scratch = probe / "scratch"
        scratch.mkdir()
        (probe / "secret").write_text("")
        check = (f"test ! -e {probe / 'secret'} && test $$ = 1 && test ! -e /proc/2 && "
                 f"touch here && ! touch /usr/llmlab-probe 2>/dev/null && echo isolated")
        drop = drops_privileges()
        if drop:
            for path in (probe, scratch):
                os.chown(path, NOBODY, NOBODY)
        proc = subprocess.run([*_private_root_cmd(scratch, 64), "sh", "-c", check], cwd=scratch,
                              capture_output=True, timeout=30,
                              preexec_fn=_become_nobody if drop else None)
        return proc.returncode == 0 and proc.stdout.strip() == b"isolated" and \
            (scratch / "here").exists()
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


def remove_group(group: Path, seconds: float = 10.0) -> None:
    """Kill every process in ``group`` (new ones too, until it is empty), then remove it. A killed
    process leaves the group only once the kernel has torn it down, which on a loaded machine can
    take well over a second: keep trying for ``seconds``."""
    import time

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
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


def rlimits() -> list[str]:
    """The ``Limits`` fields this platform's ``setrlimit`` enforces on a sandbox."""
    return [] if resource is None else enforceable()


def _set_rlimits(limits: Limits) -> None:
    if resource is not None:  # tests switch the feature off here
        set_limits(limits)


def _preexec(limits: Limits, drop: bool, group: Path | None, prctl) -> None:  # noqa: ANN001
    os.setsid()
    if group is not None:  # join before dropping privileges: root may write cgroup.procs
        fd = os.open(group / "cgroup.procs", os.O_WRONLY)
        try:
            os.write(fd, b"0")
        finally:
            os.close(fd)
    _set_rlimits(limits)
    if prctl is not None:
        prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
    if drop:
        _become_nobody()


def launch(cmd: list[str], cwd: Path, env: dict[str, str], limits: Limits,
           readonly: list[Path] = (), **popen: object) -> subprocess.Popen:  # type: ignore[assignment]
    """Start ``cmd`` sandboxed (see the module doc). The caller must :func:`kill` it.

    ``readonly``: paths made read-only for the process where a private root is unavailable but
    namespaces are (in a private root, everything but ``cwd`` is read-only, and only
    :func:`judge_view` and the system directories exist).
    """
    if files_isolated():
        cmd = [*_private_root_cmd(cwd, limits.processes), *cmd]
    elif network_isolated():
        # RLIMIT_NPROC counts the processes of a user; inside a fresh user namespace those are
        # the sandbox's own, so it is set there (by prlimit, after the namespace exists).
        prlimit = _prlimit()
        inner = [prlimit, f"--nproc={limits.processes}", "--", *cmd] if prlimit else cmd
        paths = [str(p) for p in readonly if Path(p).exists()]
        cmd = [*_namespace_cmd(paths), *inner]
    if os.name != "posix":
        raise OSError("grading runs learners' code on a POSIX system (Linux, macOS) only: "
                      f"this one is {sys.platform}")
    drop = drops_privileges()
    if drop:
        os.chown(cwd, NOBODY, NOBODY)
    group = new_group(limits.processes)
    try:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env,
                                preexec_fn=functools.partial(_preexec, limits, drop, group,
                                                             _prctl()),
                                **popen)  # type: ignore[call-overload]
    except BaseException:
        if group is not None:
            remove_group(group)
        raise
    proc.cgroup = group  # type: ignore[attr-defined]
    return proc


def process_limit_binds() -> bool:
    """Whether a sandbox's process limit is enforced by the kernel here: a cgroup binds all;
    RLIMIT_NPROC, set inside the sandbox's user namespace (by ``prlimit``), binds any user but
    root (and root's sandboxes run as ``nobody`` where they can)."""
    if cgroup_parent() is not None:
        return True
    return network_isolated() and _prlimit() is not None and \
        (os.geteuid() != 0 or drops_privileges())


def features() -> dict[str, object]:
    """Which of the sandbox's platform features this machine has (see the module doc)."""
    return {"namespaces": network_isolated(), "private_root": files_isolated(),
            "cgroups": cgroup_parent() is not None, "process_limit": process_limit_binds(),
            "resource_limits": rlimits(), "pdeathsig": _prctl() is not None,
            "undumpable": _prctl() is not None}


def weaker_guarantees() -> list[str]:
    """What a judge can do here that it could not on a Linux machine with every feature: one
    sentence per missing feature (empty when nothing is missing)."""
    have = features()
    notes = []
    if not have["namespaces"]:
        notes.append("answers ran with this machine's network and could read every file its "
                     "user can (no unprivileged user namespaces here), including the authored "
                     "notebooks in solutions/; the reference cache stayed in the grader's memory.")
    elif not have["private_root"]:
        notes.append("answers could read this machine's files (no private root for the judges "
                     "here), including the authored notebooks in solutions/; the reference cache "
                     "stayed in the grader's memory.")
    if not have["process_limit"]:
        notes.append("the process limit is not enforced here (no cgroup, and no RLIMIT_NPROC "
                     "that binds); only the audit hook stopped new processes.")
    missing = [f for f in ("memory_bytes", "cpu_seconds", "file_bytes", "open_files")
               if f not in have["resource_limits"]]
    if missing:
        notes.append(f"no kernel limit on {', '.join(missing)} here (no setrlimit); only the "
                     "grader's time limits stopped a judge.")
    if not have["pdeathsig"]:
        notes.append("judges do not die with the grader here (no PR_SET_PDEATHSIG); the "
                     "workspace's watchdog kills them when it exits.")
    if not have["undumpable"] and not have["private_root"] and Path("/proc/self").exists():
        notes.append("the grader could not make itself undumpable (no prctl): a judge of the "
                     "same user could read its memory through /proc.")
    return notes


def report(limits: Limits) -> dict[str, object]:
    """What a grade report records about the sandbox its judges ran in."""
    return {"network_isolated": network_isolated(), "files_isolated": files_isolated(),
            "process_limit_enforced": process_limit_binds(), "limits": limits.to_dict(),
            "features": features(), "notes": weaker_guarantees()}


def protected_paths() -> list[Path]:
    """What a learner's code must not change: the package, the repository, the interpreter."""
    import llmlab

    paths = {Path(llmlab.__file__).resolve().parents[1], Path(sys.prefix).resolve(),
             Path(sys.base_prefix).resolve(), Path(sys.executable).resolve().parents[1]}
    return sorted(paths)


def kill(proc: subprocess.Popen) -> None:
    """Kill ``proc``'s whole session (everything it started), reap it, and remove its cgroup."""
    kill_session(proc)
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
        deadline = time.monotonic() + 10  # the sandbox's cgroup: kill its members, remove it
        while group and time.monotonic() < deadline:
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


_UNDUMPABLE = {"depth": 0, "before": None}
_UNDUMPABLE_LOCK = threading.Lock()


def _dumpable(value: int | None = None) -> int | None:
    """``prctl(PR_GET_DUMPABLE)``, or ``PR_SET_DUMPABLE`` to ``value``; None where unavailable."""
    prctl = _prctl()
    if prctl is None:
        return None
    return prctl(3, 0, 0, 0, 0) if value is None else prctl(4, value, 0, 0, 0)


def _undumpable(enter: bool) -> None:
    """While a workspace is open, the grader is not dumpable: its memory, environment, open
    files and root under ``/proc/<pid>`` are out of reach of processes of its own user (a judge
    without a PID namespace of its own), which would need ``CAP_SYS_PTRACE``."""
    if _prctl() is None:
        return
    with _UNDUMPABLE_LOCK:
        if enter:
            if _UNDUMPABLE["depth"] == 0:
                _UNDUMPABLE["before"] = _dumpable()
                _dumpable(0)
            _UNDUMPABLE["depth"] += 1
        else:
            _UNDUMPABLE["depth"] -= 1
            if _UNDUMPABLE["depth"] == 0 and _UNDUMPABLE["before"]:
                _dumpable(int(_UNDUMPABLE["before"]))


class Workspace:
    """A temporary directory removed when the grader exits — normally, or killed. While it is
    open, the grader's own process is not dumpable (:func:`_undumpable`)."""

    def __init__(self, prefix: str = "llmlab-grade-") -> None:
        _undumpable(True)
        self._open = True
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
        if self._open:
            self._open = False
            _undumpable(False)
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
