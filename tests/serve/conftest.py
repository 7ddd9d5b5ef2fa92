import contextlib
import os
import socket
import subprocess
import sys
import time

import httpx
import pytest
import torch

from llmlab.model import load_book_model


@pytest.fixture(scope="session")
def book():
    torch.set_num_threads(1)
    model, tok = load_book_model()
    return model.eval(), tok


@contextlib.contextmanager
def _cli_server(model: str, start_timeout: float = 60):
    """``llmlab serve --model MODEL`` in its own process on a free local port, yielded once its
    ``/health`` answers (or ``start_timeout`` has passed): ``(process, base URL)``. Stopped with
    SIGTERM (then SIGKILL) if it still runs at the end."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, PYTHONPATH=os.getcwd())
    proc = subprocess.Popen([sys.executable, "-m", "llmlab.cli", "serve", "--model", model,
                             "--port", str(port), "--threads", "1"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + start_timeout
        while time.monotonic() < deadline:
            try:
                if httpx.get(base + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
            if proc.poll() is not None:
                pytest.fail(f"the server exited: {proc.stdout.read().decode()[-2000:]}")
        yield proc, base
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


@pytest.fixture(scope="session")
def cli_server():
    """The context manager that starts ``llmlab serve`` in its own process (see _cli_server)."""
    return _cli_server
