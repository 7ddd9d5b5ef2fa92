"""The judge: one process per exercise that runs the learner's code on the recorded cases.

``python -m llmlab.grading.judge`` reads a job from stdin (written by the grader: the namespace
snapshot of the reference run, the learner's cells, the exercise's test cells, the recorded
cases and what to block); ``python -m llmlab.grading.judge --serve FD`` is the fork server the
grader uses instead (:func:`serve`): one process per exercise still, forked from a server that
imported once. Each job then runs, in this order:

1. moves the record channel off stdout and silences stdout/stderr (a learner's prints, fake
   reports and warnings go nowhere);
2. arms :func:`llmlab.grading.guard.arm` for the exercise's blocked callables — before any
   learner code runs, for the rest of the process;
3. runs the learner's cells (answers and added cells), each on its own, errors ignored;
4. runs the exercise's test cells (the chapter's own code); every check call runs the learner's
   code on the *recorded* cases and writes the results, in the safe format of
   :mod:`llmlab.grading.record`, to the record channel.

The judge never sees an expected result, so nothing in this process can compare, award or
write a score: the grader reads the records and decides (:mod:`llmlab.grading.autograde`).
"""

from __future__ import annotations

import builtins
import copy
import importlib
import itertools
import marshal
import os
import pickle
import sys
import types
import zlib
from typing import Any

TIMEOUT_EXIT = 87  # a cell ran past its time limit


def _limit(seconds: float, emit: Any, where: dict[str, Any]) -> None:
    """End the process (not an exception a loop could catch) if the next cell runs too long."""
    import signal

    record = {**where, "timeout": True}

    def expired(signum: int, frame: Any, _exit=os._exit, _emit=emit, _record=record) -> None:
        _emit(_record)
        _exit(TIMEOUT_EXIT)

    signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)


def load_namespace(snapshot: bytes) -> dict[str, Any]:
    ns: dict[str, Any] = {"__name__": "__main__", "__builtins__": builtins}
    entries = pickle.loads(zlib.decompress(snapshot)) if snapshot else {}
    functions = []
    for name, entry in entries.items():
        try:
            if entry[0] == "module":
                ns[name] = importlib.import_module(entry[1])
            elif entry[0] == "pickle":
                ns[name] = pickle.loads(entry[1])
            elif entry[0] == "function":
                functions.append((name, entry))
        except Exception:
            continue
    for name, (_, code, defaults) in functions:
        try:
            d, kw = pickle.loads(defaults)
            fn = types.FunctionType(marshal.loads(code), ns, name, d)
            fn.__kwdefaults__ = kw
            ns[name] = fn
        except Exception:
            continue
    return ns


class JudgeRecorder:
    """``checks._RECORDER`` in the judge: run the learner's code on recorded cases, write results."""

    def __init__(self, emit: Any, calls: dict[str, list[dict[str, Any]]]) -> None:
        self.emit, self.calls = emit, calls
        self.cell: str | None = None
        self.k = 0

    def _next(self, kind: str) -> tuple[int, dict[str, Any] | None]:
        k, self.k = self.k, self.k + 1
        entries = self.calls.get(self.cell or "", [])
        if k >= len(entries) or entries[k]["kind"] != kind:
            return k, None
        return k, entries[k]

    def _out(self, k: int, j: Any, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        from llmlab.grading.record import encode

        try:
            value = fn(*args, **kwargs)
            self.emit({"cell": self.cell, "call": k, "case": j, "what": what, "got": encode(value)})
            return value
        except Exception as exc:
            text = error_text(exc)
            self.emit({"cell": self.cell, "call": k, "case": j, "what": what, "error": text,
                       "type": type(exc).__name__})
            return _FAILED

    def check_function(self, fn, ref, cases, **_: Any) -> None:
        from llmlab.grading.checks import mutable_inputs

        k, entry = self._next("function")
        if entry is None:
            return
        for j, (args, kwargs) in enumerate(pickle.loads(entry["payload"])):
            if self._out(k, j, "out", fn, *args, **kwargs) is not _FAILED:
                self._out(k, j, "inputs", mutable_inputs, ref, args, kwargs)

    def check_module(self, cls, ref_cls, init, inputs, **_: Any) -> None:
        import torch

        from llmlab.grading.checks import param_grads

        k, entry = self._next("module")
        if entry is None:
            return
        payload = pickle.loads(entry["payload"])
        torch.manual_seed(payload["seed"])
        learner = self._out(k, "init", "init", lambda: cls(**pickle.loads(payload["init"])))
        if learner is _FAILED:
            return
        shapes = self._out(k, "shapes", "shapes",
                           lambda: {n: list(v.shape) for n, v in learner.state_dict().items()})
        if shapes is _FAILED or self._out(k, "load", "load", learner.load_state_dict,
                                          payload["state"]) is _FAILED:
            return
        for j, (args, kwargs) in enumerate(payload["inputs"]):
            out = self._out(k, j, "out", learner, *args, **kwargs)
            if payload["grads"] and isinstance(out, torch.Tensor) and out.requires_grad:
                self._out(k, j, "grads", param_grads, learner, out)

    def check_value(self, got, expected, **_: Any) -> None:
        k, entry = self._next("value")
        if entry is not None:
            self._out(k, 0, "out", lambda: got)

    def expect(self, condition, message, **_: Any) -> None:
        k, entry = self._next("expect")
        if entry is not None:
            self._out(k, 0, "out", lambda: bool(condition))


_FAILED = object()


NOT_IMPLEMENTED = ("not implemented yet: the answer still raises NotImplementedError "
                   "(replace that line with your code).")


def error_text(exc: BaseException) -> str:
    """What the feedback says of an exception raised by the learner's code, in the grader's
    words (a learner's notebook shows the answer cell's stub, not its authoring markers)."""
    from llmlab.grading.checks import _describe_error

    if isinstance(exc, NotImplementedError):
        return NOT_IMPLEMENTED
    try:
        return _describe_error(exc)
    except Exception:
        return f"raised {type(exc).__name__}"


def run_tests(ns: dict[str, Any], tests: list[tuple[str, types.CodeType]], recorder: JudgeRecorder,
              emit: Any, cell_seconds: float) -> None:
    from llmlab.grading.reference_run import seed_cell

    for gid, code in tests:
        recorder.cell, recorder.k = gid, 0
        emit({"start": gid})
        seed_cell(gid)
        _limit(cell_seconds, emit, {"cell": gid})
        try:
            exec(code, ns)
        except BaseException as exc:  # noqa: BLE001 - a test cell's failure is a verdict
            text = error_text(exc) if isinstance(exc, Exception) else type(exc).__name__
            emit({"cell": gid, "error": text})
            continue
        emit({"cell": gid, "done": True})


def main() -> None:
    if sys.argv[1:2] == ["--serve"]:
        serve(int(sys.argv[2]), sys.argv[3:])
    else:
        run_job(sys.stdin.buffer.read(), os.dup(1))


def serve(sock_fd: int, preload: list[str]) -> None:
    """The fork server: import once, then run each job in a child forked from this clean state.

    Importing torch and a chapter's modules costs a judge more than most exercises' tests; a
    server pays it once per grade. No learner code ever runs here: each job runs in a fresh
    child (:func:`run_job`), which closes the server's socket before it reads the job, in its own
    empty folder. Protocol, on the Unix socket ``sock_fd``: the grader sends an 8-byte length
    with the write end of a fresh pipe attached (``SCM_RIGHTS``), then the pickled job; the
    child writes its records to that pipe; the server answers ``{"pid": ...}`` once forked and
    ``{"exit": ...}`` once reaped — on a channel the child no longer holds, so it cannot forge
    its own exit status. The server ends when the grader closes the socket."""
    import json
    import socket
    import struct

    import torch  # noqa: F401 - what every judge imports first

    for name in ["llmlab.grading.checks", "llmlab.grading.guard", "llmlab.grading.record",
                 "llmlab.grading.reference_run", *preload]:
        try:
            importlib.import_module(name)
        except Exception:
            continue
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    sock = socket.socket(fileno=sock_fd)
    private = in_private_root()
    for n in itertools.count():
        try:
            head, fds, _, _ = socket.recv_fds(sock, 8, 1)
            if not fds:
                break
            head += _recv_exactly(sock, 8 - len(head))
            raw = _recv_exactly(sock, struct.unpack("!Q", head)[0])
        except (OSError, EOFError, struct.error):
            break
        pid = os.fork()
        if pid == 0:  # the child: drop the server's channel, then run the job
            try:
                sock.close()
                os.mkdir(f"job-{n}")
                os.chdir(f"job-{n}")
                run_job(raw, fds[0])
            finally:
                os._exit(70)
        os.close(fds[0])
        sock.sendall(json.dumps({"pid": pid}).encode() + b"\n")
        _, status = os.waitpid(pid, 0)
        # Nothing a job wrote reaches the next (in a class, another student's): not its folder,
        # nor, in a private root, the server's own /tmp and /dev/shm.
        _empty(".")
        if private:
            _empty("/tmp")
            _empty("/dev/shm")
        sock.sendall(json.dumps({"exit": os.waitstatus_to_exitcode(status)}).encode() + b"\n")


def in_private_root() -> bool:
    """Whether this process runs in the sandbox's private root (``sandbox.launch``), whose /tmp
    and /dev/shm are its own tmpfs mounts: its root is the tmpfs named ``llmlab-judge``."""
    try:
        with open("/proc/self/mountinfo") as f:
            lines = [line.split() for line in f]
    except OSError:
        return False
    for fields in lines:
        if len(fields) > 4 and fields[4] == "/" and "-" in fields:
            if fields[fields.index("-") + 1:][:2] == ["tmpfs", "llmlab-judge"]:
                return True
    return False


def _empty(folder: str) -> None:
    """Remove everything in ``folder`` (the server's scratch directory, or its private /tmp)."""
    import shutil

    try:
        entries = list(os.scandir(folder))
    except OSError:
        return
    for entry in entries:
        if entry.is_dir(follow_symlinks=False):
            shutil.rmtree(entry.path, ignore_errors=True)
        else:
            try:
                os.unlink(entry.path)
            except OSError:
                pass


def _recv_exactly(sock: Any, n: int) -> bytes:
    chunks = []
    while n > 0:
        chunk = sock.recv(min(n, 1 << 20))
        if not chunk:
            raise EOFError("the grader closed the socket mid-job")
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def run_job(raw: bytes, record_fd: int) -> None:
    """Run one job (see the module doc) and end the process; records go to ``record_fd``."""
    job = pickle.loads(raw)
    del raw
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2) if not os.environ.get("LLMLAB_JUDGE_DEBUG") else (0, 1):
        os.dup2(null, fd)
    sys.stdout = open(os.devnull, "w")  # noqa: SIM115
    if not os.environ.get("LLMLAB_JUDGE_DEBUG"):
        sys.stderr = sys.stdout
    write = os.write

    from llmlab.grading.record import dumps

    def emit(record: dict[str, Any]) -> None:
        write(record_fd, dumps(record))

    import torch  # noqa: F401 - imported before the guard, as the chapter does

    from llmlab.grading import checks
    from llmlab.grading.guard import arm, keys_for
    from llmlab.grading.reference_run import bound_names, resolve, unb64

    objects = []
    for module, qualname in job["block"]["paths"]:
        try:
            objects.append(resolve(module, qualname))
        except Exception:
            continue
    keys = keys_for(objects)
    for qualname, code, names, name in job["block"]["codes"]:
        keys.code[(qualname, unb64(code), tuple(names))] = name
    keys.filenames |= set(job["block"].get("filenames", []))
    ns = load_namespace(job["snapshot"])
    # The chapter's own functions, as they are before the learner's code runs (trusted once armed).
    chapter_functions = {n: f for n, f in ns.items() if isinstance(f, types.FunctionType)}
    tests = [(gid, compile(source, "<llmlab-test>", "exec")) for gid, source in job["tests"]]
    trusted = [code for _, code in tests]
    trusted += [run_tests.__code__]
    frame = sys._getframe()
    while frame is not None:
        trusted.append(frame.f_code)
        frame = frame.f_back
    calls = {gid: [dict(e, payload=unb64(e["payload"])) if "payload" in e else e for e in entries]
             for gid, entries in job["calls"].items()}
    recorder = JudgeRecorder(emit, calls)
    checks._RECORDER = recorder
    learner = [compile_learner(src) for src in job["learner"]]
    job_learner_names = {n for src in job["learner"] for n in bound_names(src)}
    cell_seconds = float(job.get("cell_seconds", 60))
    snapshot = job["snapshot"]
    del job
    import llmlab.grading as grading_pkg

    saved_builtins = dict(vars(builtins))
    saved_modules = {n: m for n, m in sys.modules.items() if n.startswith("llmlab.grading")}
    saved_api = {m: dict(vars(sys.modules[m])) for m in ("llmlab.grading", "llmlab.grading.checks")}
    _import_what_tests_import(tests)  # their code exists before arming, so it is trusted
    recorder_codes = [f.__code__ for f in vars(JudgeRecorder).values() if isinstance(f, types.FunctionType)]
    arm(keys, trusted, record_fd, untrusted=recorder_codes)
    emit({"phase": "learner"})
    for code in learner:
        if code is None:
            continue
        _limit(cell_seconds, emit, {"learner": True})
        try:
            exec(code, ns)
        except BaseException:  # noqa: BLE001 - the learner's errors cost only their own tests
            pass
    # Undo what the learner's cells may have rebound: the chapter's own names, the builtins and
    # the checks' module attributes (their cells' effects on their own code stay).
    vars(builtins).update(saved_builtins)
    sys.modules.update(saved_modules)
    for name, attrs in saved_api.items():
        vars(sys.modules[name]).update(attrs)
    ns.update(load_namespace(snapshot))
    ns.update(chapter_functions)
    _refuse_aliases(ns, keys, tests, job_learner_names)
    ns["__builtins__"] = builtins
    del grading_pkg
    emit({"phase": "tests"})
    run_tests(ns, tests, recorder, emit, cell_seconds)
    emit({"end": True})
    os._exit(0)


def _import_what_tests_import(tests: list[tuple[str, types.CodeType]]) -> None:
    from llmlab.grading.guard import nested_codes

    for _, code in tests:
        for c in nested_codes(code):
            for name in c.co_names:
                if name.split(".")[0] in ("llmlab", "torch"):
                    try:
                        importlib.import_module(name)
                    except Exception:
                        pass


def _refuse_aliases(ns: dict[str, Any], keys: Any, tests: list[tuple[str, types.CodeType]],
                    learner_names: set[str]) -> None:
    """A name the learner bound and the tests use that *is* a blocked callable (``answer =
    reference``, a partial of it) raises when called, wherever the tests call it."""
    from llmlab.grading.guard import ReferenceBlocked, message, nested_codes

    used = {n for _, code in tests for c in nested_codes(code) for n in c.co_names}
    for name in sorted(used & learner_names):
        blocked = keys.covers(ns.get(name))
        if blocked is not None:
            def refuse(*args: Any, _why: str = message(blocked), **kwargs: Any) -> Any:
                raise ReferenceBlocked(_why)
            ns[name] = refuse


def compile_learner(source: str) -> types.CodeType | None:
    try:
        return compile(copy.copy(source), "<learner>", "exec")
    except (SyntaxError, ValueError):
        return None


if __name__ == "__main__":
    main()
