"""The sandbox every judge runs in: each limit with a bounded, harmless probe."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

import llmlab
from llmlab.grading.sandbox import (
    Limits,
    Workspace,
    cgroup_parent,
    files_isolated,
    judge_view,
    kill,
    launch,
    minimal_env,
    network_isolated,
    process_limit_binds,
    protected_paths,
)

REPO = Path(llmlab.__file__).resolve().parents[1]


def probe(code: str, limits: Limits | None = None, readonly=(), timeout: int = 60) -> tuple[int, str]:
    limits = limits or Limits()
    with Workspace() as ws:
        scratch = ws.scratch("probe-")
        proc = launch([sys.executable, "-c", code], scratch, minimal_env(scratch), limits,
                      readonly=list(readonly), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        try:
            out, _ = proc.communicate(timeout=timeout)
        finally:
            kill(proc)
        return proc.returncode, out.decode()


def test_memory_limit_fails_cleanly():
    rc, out = probe("try:\n    b = bytearray(4 << 30)\n    print('allocated')\n"
                    "except MemoryError:\n    print('MemoryError')\n", Limits(memory_bytes=2 << 30))
    assert rc == 0 and "MemoryError" in out


def test_cpu_limit_stops_a_busy_loop():
    rc, _ = probe("while True:\n    pass\n", Limits(cpu_seconds=1), timeout=60)
    assert rc != 0  # SIGXCPU, then SIGKILL at the hard limit


def test_file_size_limit():
    rc, out = probe("try:\n    with open('big', 'wb') as f:\n        f.write(b'x' * (2 << 20))\n"
                    "    print('wrote')\nexcept OSError as e:\n    print('EFBIG', e.errno)\n",
                    Limits(file_bytes=1 << 20))
    assert "EFBIG 27" in out


def test_open_files_limit():
    rc, out = probe("import os\nfds = []\ntry:\n    for _ in range(100):\n"
                    "        fds.append(os.open(os.devnull, os.O_RDONLY))\n"
                    "except OSError as e:\n    print('EMFILE', len(fds))\n", Limits(open_files=32))
    assert "EMFILE" in out and int(out.split()[-1]) < 32


@pytest.mark.skipif(not process_limit_binds(),
                    reason="root ignores RLIMIT_NPROC, nobody cannot run this interpreter here, "
                           "and no pids cgroup can be created")
def test_process_limit():
    rc, out = probe("import os, time\nn = 0\ntry:\n    for _ in range(100):\n"
                    "        if os.fork() == 0:\n            time.sleep(2)\n            os._exit(0)\n"
                    "        n += 1\nexcept OSError:\n    print('EAGAIN', n)\n", Limits(processes=16))
    assert "EAGAIN" in out


@pytest.mark.skipif(cgroup_parent() is None, reason="no pids cgroup can be created here")
def test_a_process_that_left_the_session_is_killed_with_its_cgroup():
    """setsid() escapes a killpg; it does not escape the sandbox's cgroup."""
    with Workspace() as ws:
        scratch = ws.scratch("probe-")
        proc = launch([sys.executable, "-c",
                       "import os, time\nif os.fork() == 0:\n    os.setsid()\n"
                       "    print(os.getpid(), flush=True)\n    time.sleep(600)\n"
                       "time.sleep(600)\n"], scratch, minimal_env(scratch), Limits(),
                      stdout=subprocess.PIPE)
        proc.stdout.readline()  # the child has left the session (its pid is the sandbox's own)
        group = proc.cgroup
        members = [int(p) for p in (group / "cgroup.procs").read_text().split()]
        escaped = [p for p in members if os.getsid(p) != os.getsid(proc.pid)]
        assert escaped, "the child that called setsid() is not in the sandbox's cgroup"
        kill(proc)
        assert not group.exists()
        for pid in escaped:
            with pytest.raises(ProcessLookupError):
                for _ in range(100):  # killed; reaped by init soon after
                    os.kill(pid, 0)
                    time.sleep(0.05)


def test_environment_is_minimal_and_cwd_is_empty(monkeypatch):
    monkeypatch.setenv("LLMLAB_TEST_SECRET", "hunter2")
    rc, out = probe("import os\nprint(sorted(os.environ))\nprint(os.listdir('.'))\n"
                    "print(os.environ.get('LLMLAB_TEST_SECRET'))\n")
    assert "hunter2" not in out and "LLMLAB_TEST_SECRET" not in out
    assert "[]" in out.splitlines()[1]


@pytest.mark.skipif(not network_isolated(), reason="no unprivileged user/network namespaces here")
def test_no_network_and_read_only_repository():
    repo = REPO
    rc, out = probe("import socket\ntry:\n    socket.create_connection(('1.1.1.1', 53), timeout=3)\n"
                    "    print('online')\nexcept OSError:\n    print('offline')\n"
                    f"try:\n    open({str(Path(repo) / 'TAMPERED')!r}, 'w')\n    print('writable')\n"
                    "except OSError:\n    print('read-only')\n", readonly=protected_paths())
    assert "offline" in out and "read-only" in out
    assert not (Path(repo) / "TAMPERED").exists()


def test_workspace_is_removed_when_its_owner_is_killed(tmp_path):
    code = (f"import sys, time\nsys.path.insert(0, {str(REPO)!r})\n"
            "from llmlab.grading.sandbox import Workspace\n"
            "ws = Workspace()\nprint(ws.root, flush=True)\ntime.sleep(600)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    root = Path(proc.stdout.readline().strip())
    assert root.is_dir()
    proc.kill()
    proc.wait()
    import time

    deadline = time.monotonic() + 30
    while root.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not root.exists()


@pytest.mark.skipif(not files_isolated(), reason="no private root for sandboxes here "
                    "(needs unprivileged user, mount and PID namespaces)")
def test_what_a_judge_can_read(tmp_path):
    """A sandbox sees the system directories, the interpreter and llmlab (read-only), its own
    scratch directory and its own processes — nothing else: not the home directory, the
    repository's solutions/ and tests/, the grading cache, the grader's temporary files or any
    other process (no /proc/<pid>/root, environ or mem of the grader) — and cannot undo that."""
    secret = tmp_path / "secret.json"
    secret.write_text('{"expected": 1}')
    view = [str(p) for p in judge_view()]
    code = f"""
import json, os, subprocess, sys
seen = {{"pids": sorted(p for p in os.listdir("/proc") if p.isdigit()), "ppid": os.getppid()}}
system = ("/proc", "/sys", "/usr", "/etc", "/dev") + tuple({view!r})
files = []
for d, dirs, names in os.walk("/"):
    if d.startswith(system):
        dirs[:] = []
        continue
    files += [os.path.join(d, n) for n in names]
seen["files"] = files
seen["exists"] = [p for p in {[str(secret), str(REPO / "solutions"), str(REPO / "tests"),
                                 str(Path.home() / ".cache"), "/proc/{os.getpid()}/root"]!r}
                  if os.path.exists(p)]
writable = []
for p in ("/", "/usr", {str(REPO / "llmlab")!r}, {view[0]!r}):
    try:
        open(os.path.join(p, "llmlab-tamper"), "w").close()
        writable.append(p)
    except OSError:
        pass
seen["writable"] = writable
undo = [subprocess.run(c, capture_output=True).returncode for c in
        (["umount", "-l", "/usr"], ["mount", "-o", "remount,rw", "/"],
         ["unshare", "--user", "--map-root-user", "--mount", "true"])]
seen["undo"] = undo
print(json.dumps(seen))
"""
    rc, out = probe(code)
    assert rc == 0, out
    seen = json.loads(out.splitlines()[-1])
    assert seen["pids"] == ["1"] and seen["ppid"] == 0
    assert seen["exists"] == []
    assert seen["writable"] == [] and 0 not in seen["undo"]
    # every file outside the system directories and the interpreter is the sandbox's own
    assert all(f.startswith(tempfile.gettempdir()) and "/probe-" in f for f in seen["files"]), \
        seen["files"]
