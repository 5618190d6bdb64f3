"""`interp app` as a process: a busy port fails in one line before the server starts, and the
Streamlit server never outlives `interp app`, not even a SIGKILL of it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from servers import LOOPBACK, free_port, wait_healthy

pytest.importorskip("streamlit")

CLI = "import sys; from interp.cli import main; sys.exit(main())"


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((LOOPBACK, port)) == 0


def _processes() -> dict[int, tuple[str, int, int]]:
    """Every live process: pid -> (state, parent pid, session id), from /proc (zombies left out)."""
    table = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:  # it ended while we looked
                continue
            state, ppid, _pgrp, session = stat[stat.rindex(")") + 2 :].split()[:4]
            if state not in "ZX":
                table[int(entry.name)] = (state, int(ppid), int(session))
    return table


def _descendants(pid: int) -> set[int]:
    table, found, todo = _processes(), set(), [pid]
    while todo:
        parent = todo.pop()
        children = {p for p, (_, ppid, _) in table.items() if ppid == parent}
        todo += children - found
        found |= children
    return found


def _kill_session(pid: int) -> None:
    """Clean-up: everything left in the session this test started (it holds nothing else)."""
    for other, (_, _, session) in _processes().items():
        if session == pid:
            try:
                os.kill(other, signal.SIGKILL)
            except ProcessLookupError:
                pass


def test_busy_port_fails_in_one_line_before_the_server_starts(tmp_path):
    with socket.socket() as holder:
        holder.bind((LOOPBACK, 0))
        holder.listen()
        port = holder.getsockname()[1]
        app = subprocess.Popen([sys.executable, "-c", CLI, "app", "--reports", str(tmp_path), "--port", str(port)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
        try:
            out, err = app.communicate(timeout=120)
        finally:
            _kill_session(app.pid)  # a server started on another address must not linger either
    lines = err.strip().splitlines()
    assert app.returncode == 2, err
    assert len(lines) == 1 and lines[0].startswith("interp app: error: "), err
    assert f"port {port} on {LOOPBACK} is already in use" in lines[0] and "--port" in lines[0], err
    assert "http://" not in out + err  # no URL was printed for a server that cannot start


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads the process table from /proc")
def test_server_dies_with_a_killed_interp_app(tmp_path):
    port = free_port()
    log = (tmp_path / "app.log").open("wb")
    app = subprocess.Popen([sys.executable, "-c", CLI, "app", "--reports", str(tmp_path), "--port", str(port)],
                           stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_healthy(f"http://{LOOPBACK}:{port}", app)
        children = _descendants(app.pid)
        assert children, "the server runs in a child process of interp app"
        app.kill()  # SIGKILL: interp app gets no chance to stop its server itself
        app.wait()
        end = time.monotonic() + 5
        while time.monotonic() < end and (_listening(port) or children & set(_processes())):
            time.sleep(0.1)
        assert not _listening(port), f"something still listens on port {port} after interp app was killed"
        left = children & set(_processes())
        assert not left, f"processes of interp app outlived it: {sorted(left)}"
    finally:
        _kill_session(app.pid)
        if app.poll() is None:
            app.kill()
            app.wait()
        log.close()
