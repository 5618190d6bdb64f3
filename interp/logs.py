"""interp's messages go to the ``interp`` logger (standard ``logging``), never to bare prints.

Library messages (``interp.*``: a model cache being built, another process holding a lock, a
damaged cache entry replaced) reach stderr as ``interp: message`` through one handler that
``interp`` installs on its own logger, the way transformers does, so a notebook sees them with
no set-up; ``logging.getLogger("interp").setLevel(logging.WARNING)`` silences the notes, and a
handler of your own replaces ours (``interp.logs.use_handler``). The command line writes its
one-line errors through ``interp.cli`` as ``interp SUBCOMMAND: error: ...``.

The rest of what interp says has one place each. Progress: every long loop (a function with
``progress=``) runs through :func:`progress`, a tqdm bar on stderr, and :func:`on_progress` lets a
caller draw the same loops elsewhere (the app draws ``st.progress`` with it, around one library
call). A problem with the caller's own arguments that the call can work around (a concept word
that is several tokens) is a Python warning of its own category (``warnings.warn``), which the
caller can filter or turn into an error. Results a command prints (tables, continuations, where
a report was written) go to stdout.

>>> import logging, interp.logs
>>> interp.logs.logger("interp.models.loading").name
'interp.models.loading'
>>> seen = []
>>> with interp.logs.on_progress(lambda desc, done, total: seen.append((desc, done, total))):
...     total = sum(interp.logs.progress(range(3), "adding", enabled=False))
>>> seen
[('adding', 0, 3), ('adding', 1, 3), ('adding', 2, 3), ('adding', 3, 3)]
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import sys
from collections.abc import Callable, Iterable, Iterator
from typing import Any

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


# -- progress --------------------------------------------------------------------------------------
# A callback that hears every progress report of the calls made while it is set (``on_progress``):
# ``callback(desc, done, total)``; total is None where the loop does not know its length.
ProgressHook = Callable[[str, int, "int | None"], None]
_HOOK: contextvars.ContextVar[ProgressHook | None] = contextvars.ContextVar("interp_progress", default=None)


class Progress:
    """One loop's progress (see :func:`progress`): iterate over it, or call :meth:`update` by hand
    (``with progress(total=n, desc=...) as bar: ... bar.update(k)``)."""

    def __init__(self, iterable: Iterable[Any] | None, desc: str, enabled: bool, total: int | None, unit: str,
                 leave: bool):
        from tqdm.auto import tqdm

        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)  # type: ignore[arg-type]
        self.iterable, self.desc, self.total, self.done = iterable, desc, total, 0
        self._hook = _HOOK.get()
        self._bar = tqdm(total=total, desc=desc, disable=not enabled, unit=unit, leave=leave)
        self._tell()

    def _tell(self) -> None:
        if self._hook is not None:
            self._hook(self.desc, self.done, self.total)

    def update(self, n: int = 1) -> None:
        """``n`` more steps done."""
        self.done += n
        self._bar.update(n)
        self._tell()

    def close(self) -> None:
        self._bar.close()

    def __iter__(self) -> Iterator[Any]:
        try:
            for item in self.iterable or ():
                yield item
                self.update()
        finally:
            self.close()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def progress(iterable: Iterable[Any] | None = None, desc: str = "", enabled: bool = True, *, total: int | None = None,
             unit: str = "it", leave: bool = True) -> Progress:
    """The progress of one loop: a tqdm bar on stderr (``enabled``: what a function's ``progress=``
    says), and a report to the :func:`on_progress` callback, if one is set, either way.
    Returns a ``Progress``: iterate over it, or call ``update`` on it.

    Examples:
        >>> [x for x in progress(["a", "b"], "letters", enabled=False)]
        ['a', 'b']
    """
    return Progress(iterable, desc, enabled, total, unit, leave)


@contextlib.contextmanager
def on_progress(callback: ProgressHook) -> Iterator[None]:
    """Call ``callback(desc, done, total)`` whenever a loop of interp run inside the block starts or
    advances (``total`` None: unknown), whether or not its bar is drawn: a page draws its own
    progress bar around one library call instead of re-running the library's loop itself."""
    token = _HOOK.set(callback)
    try:
        yield
    finally:
        _HOOK.reset(token)
