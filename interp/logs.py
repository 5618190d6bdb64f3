"""interp's messages go to the ``interp`` logger (standard ``logging``), never to bare prints.

Library messages (``interp.*``: a model cache being built, another process holding a lock, a
damaged cache entry replaced) reach stderr as ``interp: message`` through one handler that
``interp`` installs on its own logger, the way transformers does, so a notebook sees them with
no set-up; ``logging.getLogger("interp").setLevel(logging.WARNING)`` silences the notes, and a
handler of your own replaces ours (``interp.logs.use_handler``). The command line writes its
one-line errors through ``interp.cli`` as ``interp SUBCOMMAND: error: ...``.

>>> import logging, interp.logs
>>> interp.logs.logger("interp.loading").name
'interp.loading'
"""

from __future__ import annotations

import logging
import sys

ROOT = "interp"
_handler: logging.Handler | None = None


class _Stderr(logging.StreamHandler):
    """A handler that writes to whatever ``sys.stderr`` is now (a notebook's, pytest's capture)."""

    @property  # type: ignore[override]
    def stream(self):  # noqa: D102
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def _install() -> None:
    global _handler
    if _handler is not None:
        return
    _handler = _Stderr()
    _handler.setFormatter(logging.Formatter("interp: %(message)s"))
    root = logging.getLogger(ROOT)
    root.addHandler(_handler)
    if root.level == logging.NOTSET:
        root.setLevel(logging.INFO)
    root.propagate = False  # one copy of each message, also where the application logs to the root logger
    cli = logging.getLogger(f"{ROOT}.cli")  # the CLI's lines carry their own prefix
    plain = _Stderr()
    plain.setFormatter(logging.Formatter("%(message)s"))
    cli.addHandler(plain)
    cli.propagate = False


def logger(name: str) -> logging.Logger:
    """The logger of an interp module (``logger(__name__)``), with interp's handler installed."""
    _install()
    return logging.getLogger(name)


def use_handler(handler: logging.Handler | None) -> None:
    """Send interp's library messages to ``handler`` instead of stderr (``None``: back to the
    standard ``logging`` tree: they propagate to the root logger's handlers)."""
    _install()
    root = logging.getLogger(ROOT)
    if _handler in root.handlers:
        root.removeHandler(_handler)
    if handler is None:
        root.propagate = True
    else:
        root.addHandler(handler)
