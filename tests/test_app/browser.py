"""Headless Chromium driven over the DevTools protocol (no webdriver needed): evaluate, wait, screenshot.

Streamlit draws its page over a websocket after the HTML loads, so Chromium's one-shot
``--dump-dom``/``--screenshot`` flags capture an empty shell; instead we keep the browser
open, poll the page with ``Runtime.evaluate`` until what we want is drawn, then take the
screenshot with ``Page.captureScreenshot``.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

FLAGS = [
    "--headless", "--disable-gpu", "--no-first-run", "--disable-quic", "--disable-sync", "--mute-audio",
    # This machine reaches no outside hosts: without these Chromium keeps trying (and logging) at start.
    "--disable-background-networking", "--disable-component-update", "--disable-default-apps",
    "--hide-scrollbars", "--remote-debugging-port=0",
]


def find_chromium() -> str | None:
    """Debian's ``chromium`` (or another Chromium-family browser on PATH)."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


def _get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read())


class Chromium:
    """``with Chromium(url) as b: b.wait_for(js); b.screenshot(path)``."""

    def __init__(self, url: str, width: int = 1400, height: int = 1000, binary: str | None = None):
        self.url, self.size = url, (width, height)
        self.binary = binary or find_chromium()
        if self.binary is None:
            raise FileNotFoundError("no chromium on PATH (Debian: apt-get install chromium)")
        self._ids = itertools.count(1)

    def __enter__(self) -> Chromium:
        from websockets.sync.client import connect

        self._profile = tempfile.mkdtemp(prefix="interp-chromium-")
        flags = [*FLAGS, f"--user-data-dir={self._profile}", f"--window-size={self.size[0]},{self.size[1]}"]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            flags.append("--no-sandbox")  # Chromium refuses to start its sandbox as root
        self._proc = subprocess.Popen([self.binary, *flags, self.url], stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL)
        try:
            port = self._port()
            page = self._until(lambda: next((t for t in _get_json(f"http://127.0.0.1:{port}/json/list")
                                             if t.get("type") == "page"), None), 30, "a page target")
            self._ws = connect(page["webSocketDebuggerUrl"], max_size=None, open_timeout=10)
        except BaseException:
            self._stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self._ws.close()
        finally:
            self._stop()

    def _stop(self) -> None:
        self._proc.terminate()
        try:
            self._proc.wait(10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait(10)
        shutil.rmtree(self._profile, ignore_errors=True)

    def _port(self) -> int:
        marker = Path(self._profile) / "DevToolsActivePort"

        def ready() -> int | None:
            if self._proc.poll() is not None:
                raise RuntimeError(f"chromium exited with code {self._proc.returncode}")
            text = marker.read_text() if marker.exists() else ""
            return int(text.split()[0]) if text.strip() else None

        return self._until(ready, 30, "chromium's DevTools port")

    @staticmethod
    def _until(fn: Any, timeout: float, what: str) -> Any:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                value = fn()
            except (OSError, ValueError):
                value = None
            if value:
                return value
            time.sleep(0.2)
        raise TimeoutError(f"waited {timeout:.0f} s for {what}")

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        """One DevTools command; events that arrive meanwhile are skipped."""
        i = next(self._ids)
        self._ws.send(json.dumps({"id": i, "method": method, "params": params}))
        while True:
            msg = json.loads(self._ws.recv(timeout=60))
            if msg.get("id") == i:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return result.get("result", {}).get("value")

    def wait_for(self, expression: str, timeout: float = 60) -> Any:
        """Poll a JavaScript expression until it is truthy; returns its value."""
        return self._until(lambda: self.evaluate(expression), timeout, f"`{expression}` in {self.url}")

    def screenshot(self, path: Path) -> Path:
        data = self.call("Page.captureScreenshot", format="png")["data"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))
        return path
