"""The grader's end of the judges' fork server (:func:`llmlab.grading.judge.serve`).

A judge used to be a fresh interpreter per exercise, and importing torch and the chapter's
modules cost it more than most exercises' tests. ``JudgeServer`` starts one sandboxed server per
grading worker; the server imports once and forks a child per job, so each exercise still runs
in a process of its own that no other exercise's code has touched, but starts in milliseconds.

``run(job, timeout)`` returns what the judge wrote and how it ended: ``(records bytes, exit
status or None, timed out)``. A job that runs past ``timeout`` is killed with its server, and a
server that dies is restarted for the next job.
"""

from __future__ import annotations

import json
import os
import pickle
import select
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from llmlab.grading.sandbox import Limits, Workspace, kill, launch, minimal_env

REAP_SECONDS = 30  # after a kill, how long the server may take to report the exit


class JudgeServer:
    """One sandboxed fork server; jobs run one at a time. ``close()`` ends it."""

    def __init__(self, workspace: Workspace, limits: Limits, readonly: list[Path],
                 preload: list[str] = ()) -> None:
        self.workspace, self.limits, self.readonly = workspace, limits, readonly
        self.preload = list(preload)
        self.proc: subprocess.Popen | None = None
        self.sock: socket.socket | None = None
        self._buf = b""

    def _start(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        scratch = self.workspace.scratch("judge-")
        try:
            self.proc = launch([sys.executable, "-P", "-m", "llmlab.grading.judge", "--serve",
                                str(theirs.fileno()), *self.preload], scratch,
                               minimal_env(scratch), self.limits, readonly=self.readonly,
                               pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        finally:
            theirs.close()
        self.workspace.register(self.proc)
        self.sock, self._buf = ours, b""

    def _line(self, deadline: float) -> dict[str, Any] | None:
        """The server's next message, or None if it died or ``deadline`` passed first."""
        assert self.sock is not None
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.sock], [], [], left)[0]:
                return None
            chunk = self.sock.recv(4096)
            if not chunk:
                return None
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        try:
            msg = json.loads(line)
        except ValueError:
            return None
        return msg if isinstance(msg, dict) else None

    def run(self, job: dict[str, Any], timeout: float) -> tuple[bytes, int | None, bool]:
        if self.proc is None or self.proc.poll() is not None:
            self.close()
            self._start()
        assert self.sock is not None
        deadline = time.monotonic() + timeout
        payload = pickle.dumps(job, protocol=5)
        r, w = os.pipe()
        try:
            socket.send_fds(self.sock, [struct.pack("!Q", len(payload))], [w])
            os.close(w)
            w = -1
            self.sock.sendall(payload)
            started = self._line(deadline)
            pid = started.get("pid") if started else None
            raw, timed_out = _read_until_eof(r, deadline)
        except OSError:  # the server is gone
            raw, timed_out, pid = b"", False, None
        finally:
            if w >= 0:
                os.close(w)
            os.close(r)
        if timed_out:
            # Kill the job with its server (in a PID namespace of its own, the pid the server
            # reports is not one the grader can signal); the next job starts a fresh server.
            self.close()
            return raw, None, True
        ended = self._line(time.monotonic() + REAP_SECONDS) if isinstance(pid, int) else None
        status = ended.get("exit") if ended else None
        if not isinstance(status, int):
            self.close()  # out of step with the server: the next job gets a fresh one
            status = None
        return raw, status, timed_out

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        if self.proc is not None:
            kill(self.proc)
            self.workspace.unregister(self.proc)
            self.proc = None


class JudgePool:
    """Judge servers shared by the grades of one chapter (a class, or one notebook's exercises):
    each grading worker borrows a server for a job and gives it back, so a server's start (the
    interpreter, torch, the chapter's modules) is paid once per worker, not once per student.
    Every job still runs in a fresh child of its server."""

    def __init__(self, workspace: Workspace, limits: Limits, readonly: list[Path],
                 preload: list[str] = ()) -> None:
        self.workspace, self.limits, self.readonly = workspace, limits, readonly
        self.preload = list(preload)
        self._free: list[JudgeServer] = []
        self._all: list[JudgeServer] = []
        self._lock = threading.Lock()

    def acquire(self) -> JudgeServer:
        with self._lock:
            if self._free:
                return self._free.pop()
            server = JudgeServer(self.workspace, self.limits, self.readonly, self.preload)
            self._all.append(server)
            return server

    def release(self, server: JudgeServer) -> None:
        with self._lock:
            self._free.append(server)

    def close(self) -> None:
        with self._lock:
            for server in self._all:
                server.close()
            self._all, self._free = [], []


def _read_until_eof(fd: int, deadline: float) -> tuple[bytes, bool]:
    """Everything written to the pipe ``fd`` until its writers close it; (data, timed out)."""
    chunks = []
    while True:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            return b"".join(chunks), True
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            return b"".join(chunks), False
        chunks.append(chunk)
