"""``interp app [--reports DIR ...] [--model NAME]``: the Streamlit explorer, on 127.0.0.1 by default.

Runs ``streamlit run`` on ``interp.app``'s entry script in a child process; report folders and
the model reach it through environment variables (see ``interp.app.main``). The port is checked
first (a busy one ends the command in one line), and the server never outlives ``interp app``:
the child asks the kernel to kill it when its parent dies (``PR_SET_PDEATHSIG`` on Linux; it
enforces this even when ``interp app`` is killed with SIGKILL and has no chance to clean up),
or elsewhere watches its parent from a thread.
"""

from __future__ import annotations

import argparse
import errno
import ipaddress
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from interp.errors import InterpError, UnknownNameError, require
from interp.logs import logger

LOOPBACK = "127.0.0.1"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("app", help="explore heads, attention, neurons, the knob and circuits in a browser")
    p.add_argument("--reports", type=Path, action="append", metavar="DIR",
                   help="folder scanned recursively for reports; repeatable "
                        "(default: reports/ and the committed case_studies/results/)")
    p.add_argument("--model", help="model for the live views: bundled name, local HF folder or .gguf file")
    p.add_argument("--host", default=LOOPBACK, help=f"address to listen on (default {LOOPBACK}, this machine only)")
    p.add_argument("--port", type=int, default=8501, help="port to listen on (default 8501)")
    p.set_defaults(run=run)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def command(args: argparse.Namespace) -> tuple[list[str], dict[str, str]]:
    """The ``streamlit run`` command line and its environment, after checking the arguments."""
    from interp.app import main as app_main
    from interp.app.ui import ENV_MODEL, ENV_REPORTS
    from interp.models.bundled import bundled_names, find_bundled

    if not 0 < args.port < 65536:
        raise InterpError(f"--port {args.port} is not a port number (1..65535)")
    env = dict(os.environ)
    if args.reports:
        missing = [str(d) for d in args.reports if not d.is_dir()]
        if missing:
            raise InterpError(f"--reports: no such folder: {', '.join(missing)}")
        env[ENV_REPORTS] = os.pathsep.join(str(d.resolve()) for d in args.reports)
    else:
        env.pop(ENV_REPORTS, None)
    if args.model:
        path = Path(args.model).expanduser()
        if not path.exists() and find_bundled(args.model) is None and "/" not in args.model:
            raise UnknownNameError("model", args.model, bundled_names(),
                                   hint="Or give a local Hugging Face model folder, a .gguf file or a hub id")
        env[ENV_MODEL] = str(path.resolve()) if path.exists() else args.model
    else:
        env.pop(ENV_MODEL, None)
    argv = [
        sys.executable, "-m", "streamlit", "run", str(Path(app_main.__file__).resolve()),
        "--server.address", args.host, "--server.port", str(args.port),
        "--server.headless", "true", "--browser.gatherUsageStats", "false",
        # No reloading on file changes, and uncaught errors (a bug) show as a message, not a traceback.
        "--server.fileWatcherType", "none", "--client.showErrorDetails", "type", "--client.toolbarMode", "minimal",
    ]
    return argv, env


def _can_listen(host: str, port: int) -> OSError | None:
    """None if a server could listen on ``host:port`` now, else the error binding it gave."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as s:
        # As Streamlit's server binds: a port whose old connections linger in TIME_WAIT is free.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except socket.gaierror as exc:  # a host name that does not resolve
            return OSError(errno.EADDRNOTAVAIL, exc.strerror)
        except OSError as exc:
            return exc
    return None


def check_port(host: str, port: int) -> None:
    """Fail in one line, before the server starts, if it could not listen on ``host:port``."""
    problem = _can_listen(host, port)
    if problem is None:
        return
    if problem.errno == errno.EADDRINUSE:
        free = next((p for p in range(port + 1, min(port + 50, 65536)) if _can_listen(host, p) is None), None)
        hint = f", e.g. --port {free} (free now)" if free else ""
        raise InterpError(f"port {port} on {host} is already in use (by another interp app or another server); "
                          f"choose a free port with --port N{hint}")
    if problem.errno == errno.EACCES:
        raise InterpError(f"port {port} on {host} needs privileges here ({problem.strerror}); choose a port in "
                          "1024..65535 with --port N")
    if problem.errno == errno.EADDRNOTAVAIL:
        raise InterpError(f"--host {host} is not an address of this machine ({problem.strerror}); use "
                          f"{LOOPBACK} (the default) or one of this machine's addresses")
    raise InterpError(f"cannot listen on {host}:{port} ({problem.strerror or problem}); choose another --port or --host")


def _tied_to_this_process(argv: list[str]) -> list[str]:
    """``python -m streamlit ...`` run through this module's ``__main__``, which ties the server's
    life to this process (:func:`_serve`)."""
    assert argv[1:3] == ["-m", "streamlit"], argv
    return [argv[0], "-m", __name__, str(os.getpid()), *argv[3:]]


def _die_with(parent: int) -> None:
    """End this process when ``parent`` ends, however it ends (SIGKILL included)."""
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0) == 0:
            if os.getppid() != parent:  # it died before the prctl: no signal will come
                os._exit(1)
            return

    def watch() -> None:  # elsewhere: an orphan is adopted by another process
        while os.getppid() == parent:
            time.sleep(0.5)
        os.kill(os.getpid(), signal.SIGKILL)

    if os.getppid() != parent:
        os._exit(1)
    threading.Thread(target=watch, name="interp-app-parent-watch", daemon=True).start()


def _serve(argv: list[str]) -> None:
    """The server process: ``PARENT_PID run SCRIPT [streamlit options]``."""
    _die_with(int(argv[0]))
    from streamlit.web.cli import main as streamlit_main

    streamlit_main(args=argv[1:], prog_name="streamlit")


def run(args: argparse.Namespace) -> int:
    require("streamlit", "interp app", "pip install 'interp[app]'")
    argv, env = command(args)
    check_port(args.host, args.port)
    log = logger("interp.cli")
    if not is_loopback(args.host):
        log.warning(f"interp app: warning: listening on {args.host}, not {LOOPBACK}: anyone who can reach this "
                    "machine can use the app, and it runs models on their input")
    log.info(f"interp app: http://{args.host}:{args.port} (Ctrl-C stops it)")
    server = subprocess.Popen(_tied_to_this_process(argv), env=env)
    # Stopping `interp app` stops the server too (Ctrl-C reaches both; SIGTERM only this process).
    signal.signal(signal.SIGTERM, lambda *_: server.terminate())
    try:
        return server.wait()
    except KeyboardInterrupt:
        server.terminate()
        return server.wait()


if __name__ == "__main__":  # the server process that run() starts
    _serve(sys.argv[1:])
