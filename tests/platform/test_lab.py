"""`make lab` serves JupyterLab on chapters/ (headless: no browser, chosen host and port)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_make_lab_serves_jupyterlab():
    port = free_port()
    env = {**os.environ, "JUPYTER_TOKEN": "llmlab-test"}
    proc = subprocess.Popen(["make", "lab", "BROWSER=no", f"PORT={port}", "HOST=127.0.0.1"],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        deadline, body = time.monotonic() + 90, ""
        while time.monotonic() < deadline and not body:
            try:
                url = f"http://127.0.0.1:{port}/api/contents?token=llmlab-test"
                body = urllib.request.urlopen(url, timeout=5).read().decode()
            except OSError:
                time.sleep(1)
        assert '"00_intro"' in body, "JupyterLab did not serve chapters/ within 90 s"
        page = urllib.request.urlopen(f"http://127.0.0.1:{port}/lab?token=llmlab-test", timeout=10)
        assert page.status == 200 and b"JupyterLab" in page.read()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
