"""Headless Chromium driven over the Chrome DevTools Protocol, and a local server for the site.

Just enough of the protocol for the book's tests: open a page, record every request it makes
and every script error, evaluate JavaScript (awaiting promises), and take screenshots.
Chromium is started with a fresh profile and the flags that stop its own background traffic,
so every request the tests see comes from the page.
"""

from __future__ import annotations

import base64
import functools
import http.server
import json
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import websocket

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--no-first-run",
    "--hide-scrollbars",
    "--remote-debugging-port=0",
]
VIEWPORT = (1280, 900)


def find_chromium() -> str | None:
    """The Chromium executable, or None when the machine has none."""
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        if path := shutil.which(name):
            return path
    return None


class SiteServer:
    """Serve a directory over HTTP on 127.0.0.1 (an ephemeral port) in a background thread."""

    def __init__(self, directory: Path):
        handler = functools.partial(_QuietHandler, directory=str(directory))
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.origin = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        pass


@dataclass
class PageLoad:
    """What happened while a page loaded: its requests, failures and script errors."""

    url: str
    requests: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)  # "url: reason" for failed or >= 400
    errors: list[str] = field(default_factory=list)  # uncaught exceptions and console errors


class Chromium:
    """One headless Chromium with one tab, controlled over its DevTools websocket."""

    def __init__(self, executable: str, timeout: float = 30.0):
        self.profile = Path(tempfile.mkdtemp(prefix="llmlab-chromium-"))
        self.timeout = timeout
        width, height = VIEWPORT
        self.process = subprocess.Popen(
            [
                executable,
                *FLAGS,
                f"--user-data-dir={self.profile}",
                f"--window-size={width},{height}",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        port = self._devtools_port(timeout)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=timeout) as reply:
            page = next(t for t in json.load(reply) if t["type"] == "page")
        self.ws = websocket.create_connection(
            page["webSocketDebuggerUrl"], timeout=timeout, suppress_origin=True
        )
        self._next_id = 0
        self.events: list[dict] = []
        for domain in ("Page", "Network", "Runtime"):
            self.send(f"{domain}.enable")
        self.send(
            "Emulation.setDeviceMetricsOverride",
            width=width,
            height=height,
            deviceScaleFactor=1,
            mobile=False,
        )

    def _devtools_port(self, timeout: float) -> int:
        port_file = self.profile / "DevToolsActivePort"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if port_file.is_file() and (lines := port_file.read_text().split()):
                return int(lines[0])
            if self.process.poll() is not None:
                raise RuntimeError(f"chromium exited with code {self.process.returncode}")
            time.sleep(0.05)
        raise TimeoutError("chromium did not open its DevTools port")

    def send(self, method: str, **params: Any) -> dict:
        """Call a DevTools method and return its result; events that arrive meanwhile are kept."""
        self._next_id += 1
        self.ws.send(json.dumps({"id": self._next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv())
            if message.get("id") == self._next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})
            self.events.append(message)

    def wait_event(self, method: str, timeout: float = 30.0) -> dict:
        """Wait for the next event ``method`` (one already received counts)."""
        deadline = time.monotonic() + timeout
        while True:
            for i, event in enumerate(self.events):
                if event.get("method") == method:
                    return self.events.pop(i)
            if time.monotonic() > deadline:
                raise TimeoutError(f"no {method} within {timeout} s")
            self.ws.settimeout(max(0.05, deadline - time.monotonic()))
            try:
                self.events.append(json.loads(self.ws.recv()))
            except websocket.WebSocketTimeoutException:
                pass
            finally:
                self.ws.settimeout(self.timeout)

    def evaluate(self, expression: str) -> Any:
        """Evaluate JavaScript in the page, awaiting a returned promise; return its JSON value."""
        result = self.send("Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression[:80]}…: {result['exceptionDetails'].get('text')}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 20.0) -> Any:
        """Poll ``expression`` until it is truthy; return its value (or the last one on timeout)."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.evaluate(expression)
            if value or time.monotonic() > deadline:
                return value
            time.sleep(0.1)

    def load(self, url: str, timeout: float = 30.0) -> PageLoad:
        """Navigate to ``url``, wait for its load event, and report its traffic and errors."""
        self.events.clear()
        self.send("Page.navigate", url=url)
        self.wait_event("Page.loadEventFired", timeout)
        self.wait_for("document.readyState === 'complete'", timeout)
        return self.report(url)

    def report(self, url: str) -> PageLoad:
        """Summarise the events received since the last ``load``."""
        self._drain()
        load, urls = PageLoad(url), {}
        for event in self.events:
            method, params = event.get("method"), event.get("params", {})
            if method == "Network.requestWillBeSent":
                load.requests.append(params["request"]["url"])
                urls[params["requestId"]] = params["request"]["url"]
            elif method == "Network.loadingFailed" and not params.get("canceled"):
                load.failures.append(f"{urls.get(params['requestId'], '?')}: {params.get('errorText')}")
            elif method == "Network.responseReceived" and params["response"]["status"] >= 400:
                load.failures.append(f"{params['response']['url']}: HTTP {params['response']['status']}")
            elif method == "Runtime.exceptionThrown":
                details = params["exceptionDetails"]
                load.errors.append(details.get("exception", {}).get("description") or details.get("text", ""))
            elif method == "Runtime.consoleAPICalled" and params.get("type") == "error":
                load.errors.append(
                    " ".join(str(a.get("value", a.get("description", ""))) for a in params["args"])
                )
        return load

    def _drain(self) -> None:
        self.ws.settimeout(0.2)
        try:
            while True:
                self.events.append(json.loads(self.ws.recv()))
        except websocket.WebSocketTimeoutException:
            pass
        finally:
            self.ws.settimeout(self.timeout)

    def screenshot(self, path: Path) -> None:
        """Save a PNG of what the viewport shows now."""
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(self.send("Page.captureScreenshot", format="png")["data"]))

    def screenshot_pages(self, stem: Path, max_screens: int = 12) -> list[Path]:
        """Scroll through the page a screen at a time, saving ``stem.png``, ``stem-2.png``, …"""
        height = int(self.evaluate("document.documentElement.scrollHeight"))
        step = VIEWPORT[1] - 100  # screens overlap by the height of the sticky article header
        paths = []
        for i in range(min(max_screens, 1 + max(0, height - VIEWPORT[1] + step - 1) // step)):
            self.evaluate(f"window.scrollTo(0, {i * step}); 1")
            time.sleep(0.1)  # let the sticky headers and the scroll spy settle
            path = stem.with_name(stem.name + ("" if i == 0 else f"-{i + 1}") + ".png")
            self.screenshot(path)
            paths.append(path)
        self.evaluate("window.scrollTo(0, 0); 1")
        return paths

    def close(self) -> None:
        try:
            self.ws.close()
        finally:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
            shutil.rmtree(self.profile, ignore_errors=True)
