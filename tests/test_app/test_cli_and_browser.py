"""`interp app`: its command line, and the real server loaded in headless Chromium."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from browser import Chromium, find_chromium
from servers import free_port, wait_healthy

from interp.cli import build_parser, main
from interp.cli.app import command, is_loopback


def _args(*argv: str):
    return build_parser().parse_args(["app", *argv])


def test_command_binds_loopback_by_default(tmp_path):
    argv, env = command(_args("--reports", str(tmp_path), "--model", "smollm2-135m", "--port", "9000"))
    assert argv[1:4] == ["-m", "streamlit", "run"] and argv[4].endswith(os.path.join("app", "main.py"))
    opts = dict(zip(argv[5::2], argv[6::2], strict=True))
    assert opts["--server.address"] == "127.0.0.1" and opts["--server.port"] == "9000"
    assert opts["--server.headless"] == "true" and opts["--browser.gatherUsageStats"] == "false"
    assert env["INTERP_APP_REPORTS"] == str(tmp_path.resolve()) and env["INTERP_APP_MODEL"] == "smollm2-135m"
    two = command(_args("--reports", str(tmp_path), "--reports", str(tmp_path / ".."), "--model", str(tmp_path)))[1]
    assert two["INTERP_APP_REPORTS"].split(os.pathsep) == [str(tmp_path.resolve()), str(tmp_path.parent.resolve())]
    assert two["INTERP_APP_MODEL"] == str(tmp_path.resolve())


def test_bad_arguments_are_errors(tmp_path, capsys):
    assert main(["app", "--reports", str(tmp_path / "missing")]) == 2
    assert "no such folder" in capsys.readouterr().err
    assert main(["app", "--model", "no-such-model"]) == 2
    err = capsys.readouterr().err
    assert "unknown model 'no-such-model'" in err and "smollm2-135m" in err
    assert main(["app", "--port", "70000"]) == 2


def test_other_hosts_warn(monkeypatch, capsys):
    calls = []

    class FakePopen:
        def __init__(self, argv, env):
            calls.append(argv)

        def wait(self):
            return 0

    monkeypatch.setattr(subprocess, "Popen", FakePopen)
    monkeypatch.setattr(signal, "signal", lambda *a: None)
    assert main(["app", "--host", "0.0.0.0"]) == 0
    assert "warning: listening on 0.0.0.0" in capsys.readouterr().err
    assert calls[0][calls[0].index("--server.address") + 1] == "0.0.0.0"
    assert main(["app"]) == 0
    assert "warning" not in capsys.readouterr().err
    assert is_loopback("localhost") and is_loopback("127.0.0.2") and is_loopback("::1") and not is_loopback("10.0.0.1")


@pytest.mark.slow
def test_real_server_draws_heatmap_in_chromium(reports_root, tmp_path):
    if find_chromium() is None:
        pytest.skip("no chromium on PATH: the end-to-end test needs Debian's chromium (apt-get install chromium)")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = (tmp_path / "server.log").open("wb")
    server = subprocess.Popen(
        [sys.executable, "-c", "import sys; from interp.cli import main; sys.exit(main())",
         "app", "--reports", str(reports_root), "--port", str(port)],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        wait_healthy(url, server, timeout=90)
        with Chromium(f"{url}/", 1400, 1100) as browser:  # the head-scores page is the default
            # plotly draws the heatmaps one after another: wait until all three are in
            count = "document.querySelectorAll('.js-plotly-plot .heatmaplayer image').length"
            assert browser.wait_for(f"{count} >= 3", 120)
            assert browser.evaluate("document.querySelector('h1').innerText") == "Head scores"
            text = browser.evaluate("document.body.innerText")
            assert "Traceback" not in text and "Page not found" not in text
            time.sleep(1)  # let plotly finish its transition before the picture
            shot = browser.screenshot(tmp_path / "heads.png")
        data = shot.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000
    finally:
        os.killpg(server.pid, signal.SIGTERM)  # the group holds only the server this test started
        try:
            server.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        log.close()
