"""Starting and waiting for ``interp app`` servers in tests (loopback only)."""

from __future__ import annotations

import socket
import subprocess
import time
import urllib.request

LOOPBACK = "127.0.0.1"


def free_port() -> int:
    """A port on the loopback address that nothing listens on now."""
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def wait_healthy(url: str, server: subprocess.Popen, timeout: float = 120) -> None:
    """Return once the Streamlit server at ``url`` answers its health check; raise if it exits or
    does not answer within ``timeout`` seconds."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if server.poll() is not None:
            raise RuntimeError(f"interp app exited with code {server.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                if r.read() == b"ok":
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"no answer from {url} after {timeout} s")
