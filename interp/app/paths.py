"""Paths as the app shows them: never absolute, so pages (and screenshots of them) carry no machine's folders.

``display_path`` gives a path relative to the working folder when it is under it, ``~/...``
when it is under the home folder, else from the report folder it is in (``reports0/knob/x``),
else only its name. ``display_text`` does the same to every such path inside a message
(an exception's text, say) that names one.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path, PurePath


def _absolute(path: str | os.PathLike[str]) -> Path:
    return Path(os.path.abspath(os.path.expanduser(os.fspath(path))))


def _under(path: Path, base: Path) -> PurePath | None:
    try:
        return path.relative_to(base)
    except ValueError:
        return None


def _home() -> Path | None:
    try:
        home = Path.home()
    except (KeyError, RuntimeError):  # no home folder known
        return None
    return home if home.is_absolute() and home != Path(home.anchor) else None


def display_path(path: str | os.PathLike[str], roots: Iterable[str | os.PathLike[str]] = ()) -> str:
    """``path`` without its machine-specific part: relative to the working folder when under it
    (``.`` for the folder itself), ``~/...`` under the home folder, ``root-name/...`` under one of
    ``roots`` (the report folders, the deepest first), else the folder's (or file's) own name."""
    p = _absolute(path)
    cwd = Path.cwd()
    rel = _under(p, cwd) if cwd != Path(cwd.anchor) else None  # from /, a relative path is the whole path
    if rel is not None:
        return rel.as_posix() if rel.parts else "."
    home = _home()
    if home is not None and (rel := _under(p, home)) is not None:
        return "~/" + rel.as_posix() if rel.parts else "~"
    for root in sorted((_absolute(r) for r in roots), key=lambda r: len(r.parts), reverse=True):
        if (rel := _under(p, root)) is not None and root.name:
            return PurePath(root.name, rel).as_posix()
    return p.name or "/"


# A path inside a message: what may follow a base folder, and a whole absolute path of two or more parts.
_DELIM = r"\s'\"`,;()\[\]{}<>"
_REST = rf"(?:[/\\][^{_DELIM}]*)?"
_ANY_ABSOLUTE = re.compile(rf"(?<![\w.~:/\\])/[^{_DELIM}/]+/[^{_DELIM}]*")


def display_text(text: str, roots: Iterable[str | os.PathLike[str]] = ()) -> str:
    """``text`` with every absolute path in it written as ``display_path`` writes it: those under
    the working folder, the home folder or one of ``roots`` first (the longest base first), then
    any other (``/usr/lib/x.py`` becomes ``x.py``)."""
    roots = list(roots)  # read twice below
    bases = {*(_absolute(r) for r in roots), Path.cwd()}  # (a root folder such as / is passed over below)
    home = _home()
    if home is not None:
        bases.add(home)
    for base in sorted(bases, key=lambda b: len(str(b)), reverse=True):
        if base == Path(base.anchor):
            continue
        # The base (not a longer name that starts like it) and the rest of the path after it.
        pattern = re.escape(str(base)) + rf"(?=$|[{_DELIM}/\\]|\.(?:$|\s)){_REST}"
        text = re.sub(pattern, lambda m: display_path(m.group(0), roots), text)
    return _ANY_ABSOLUTE.sub(lambda m: display_path(m.group(0), roots), text)
