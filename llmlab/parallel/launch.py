"""Launch k ``torch.distributed`` processes from a notebook or a test and collect their results.

``launch(fn, world_size, *args)`` starts ``world_size`` processes (``gloo`` on a CPU), runs
``fn(*args)`` in each after ``init_process_group``, and returns the list of return values indexed
by rank. A rank that raises makes the whole run raise ``RuntimeError`` carrying that rank's
traceback; the others are terminated, so nothing hangs. Every collective runs under the process
group's ``timeout``, and the launcher has an overall deadline too.

``fn`` must be importable by the workers (a function in an llmlab module, not a notebook cell):
processes are forked from a clean ``forkserver`` process (never from the caller, whose threads
could deadlock a fork) and find ``fn`` by its module and name.

The same workers run under ``torchrun`` across machines (NCCL on GPUs), e.g.::

    python -m torch.distributed.run --nproc_per_node 2 -m llmlab.parallel.launch \
        llmlab.parallel.workers:collectives_check

Taught in chapter 04 (solutions/04_parallel).
"""

from __future__ import annotations

import ast
import datetime
import importlib
import inspect
import linecache
import pickle
import queue
import socket
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def free_port() -> int:
    """A TCP port on localhost that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world_size: int, port: int, backend: str, timeout: float,
            fn: Callable, args: tuple, kwargs: dict, results) -> None:
    torch.set_num_threads(1)  # k processes share the machine's cores
    try:
        dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                                world_size=world_size,
                                timeout=datetime.timedelta(seconds=timeout))
        out = fn(*args, **kwargs)
        results.put((rank, True, pickle.dumps(out)))  # a copy: no shared memory to outlive us
    except BaseException:  # noqa: BLE001 - every failure is reported to the parent
        results.put((rank, False, traceback.format_exc()))
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def _failure_report(rank: int, tb: str, world_size: int, results, grace: float = 2.0) -> str:
    """The first failing rank's traceback, plus any other rank that fails within ``grace``
    seconds (a crash on one rank often shows up as "connection closed" on the others)."""
    failures = [(rank, tb)]
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        try:
            r, ok, value = results.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            break
        if not ok:
            failures.append((r, value))
    # A rank whose error is a broken connection is a victim; report the others first.
    failures.sort(key=lambda f: "Connection closed" in f[1] or "Connection reset" in f[1])
    return "\n".join(f"rank {r} of {world_size} failed:\n{t}" for r, t in failures)


def launch(fn: Callable, world_size: int, *args: Any, backend: str = "gloo",
           timeout: float = 60.0, **kwargs: Any) -> list[Any]:
    """Run ``fn(*args, **kwargs)`` on ``world_size`` processes; return the results by rank.

    Inside ``fn``, ``torch.distributed`` is initialised (``dist.get_rank()``,
    ``dist.get_world_size()``). ``timeout`` (seconds) bounds every collective and the whole run.
    Raises ``RuntimeError`` with the traceback of the first rank that failed.
    """
    if world_size < 1:
        raise ValueError(f"world_size must be >= 1, got {world_size}")
    if not callable(fn) or "<locals>" in getattr(fn, "__qualname__", "<locals>"):
        raise ValueError("launch needs a module-level function the workers can import, "
                         f"got {fn!r}")
    ctx = mp.get_context("forkserver")
    # The fork server imports torch once; each later launch forks it (seconds -> ~0.1 s).
    ctx.set_forkserver_preload(["torch.distributed", "llmlab.parallel.launch", fn.__module__])
    results = ctx.Queue()
    port = free_port()
    procs = [ctx.Process(target=_worker, daemon=True,
                         args=(r, world_size, port, backend, timeout, fn, args, kwargs, results))
             for r in range(world_size)]
    for p in procs:
        p.start()
    out: dict[int, Any] = {}
    deadline = time.monotonic() + timeout + 60.0  # + start-up (importing torch)
    try:
        while len(out) < world_size:
            try:
                rank, ok, value = results.get(timeout=1.0)
            except queue.Empty:
                dead = [r for r, p in enumerate(procs) if r not in out and not p.is_alive()]
                if dead and results.empty():
                    time.sleep(0.5)  # a result may still be in flight
                    if results.empty():
                        raise RuntimeError(f"rank {dead[0]} died without a result (exit code "
                                           f"{procs[dead[0]].exitcode})") from None
                if time.monotonic() > deadline:
                    raise RuntimeError(f"launch timed out after {timeout:.0f}s; ranks "
                                       f"{sorted(set(range(world_size)) - set(out))} did not "
                                       "finish") from None
                continue
            if not ok:
                raise RuntimeError(_failure_report(rank, value, world_size, results))
            out[rank] = pickle.loads(value)
    finally:
        for p in procs:
            p.join(timeout=5.0)
            if p.is_alive():
                p.terminate()
                p.join(timeout=5.0)
    return [out[r] for r in range(world_size)]


def source_of(obj: Callable) -> str:
    """The source of a function or class, also one defined in a notebook cell (whose module has
    no file, so ``inspect.getsource`` cannot find a class there): what a worker needs to run a
    notebook's code, since new processes cannot import a notebook's cells."""
    try:
        return inspect.getsource(obj)
    except (OSError, TypeError):
        if not inspect.isclass(obj):
            raise
    codes = [v.__code__ for v in vars(obj).values() if inspect.isfunction(v)]
    for code in codes:
        text = "".join(linecache.getlines(code.co_filename))
        for node in ast.walk(ast.parse(text)) if text else ():
            if isinstance(node, ast.ClassDef) and node.name == obj.__name__ and \
                    node.lineno <= code.co_firstlineno <= (node.end_lineno or 0):
                return ast.get_source_segment(text, node, padded=True) or ""
    raise OSError(f"could not find the source of {obj!r}")


def _resolve(spec: str) -> Callable:
    """``"package.module:function"`` -> the function."""
    module, _, name = spec.partition(":")
    if not name:
        raise ValueError(f"expected 'module:function', got {spec!r}")
    return getattr(importlib.import_module(module), name)


def main(argv: list[str] | None = None) -> None:
    """Entry point under ``torchrun``: reads RANK/WORLD_SIZE from the environment, runs the
    worker named on the command line and prints ``rank R: result``."""
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        raise SystemExit("usage: torchrun ... -m llmlab.parallel.launch module:function")
    fn = _resolve(argv[0])
    torch.set_num_threads(1)
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    dist.init_process_group(backend, timeout=datetime.timedelta(seconds=60))
    try:
        print(f"rank {dist.get_rank()}: {fn()}", flush=True)
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
