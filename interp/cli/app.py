"""``interp app [--reports DIR ...] [--model NAME]``: the Streamlit explorer, on 127.0.0.1 by default.

Runs ``streamlit run`` on ``interp.app``'s entry script in a child process; report folders and
the model reach it through environment variables (see ``interp.app.main``).
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import signal
import subprocess
import sys
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
    from interp.bundled import bundled_names, find_bundled

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


def run(args: argparse.Namespace) -> int:
    require("streamlit", "interp app", "pip install 'interp[app]'")
    argv, env = command(args)
    log = logger("interp.cli")
    if not is_loopback(args.host):
        log.warning(f"interp app: warning: listening on {args.host}, not {LOOPBACK}: anyone who can reach this "
                    "machine can use the app, and it runs models on their input")
    log.info(f"interp app: http://{args.host}:{args.port} (Ctrl-C stops it)")
    server = subprocess.Popen(argv, env=env)
    # Stopping `interp app` stops the server too (Ctrl-C reaches both; SIGTERM only this process).
    signal.signal(signal.SIGTERM, lambda *_: server.terminate())
    try:
        return server.wait()
    except KeyboardInterrupt:
        server.terminate()
        return server.wait()
