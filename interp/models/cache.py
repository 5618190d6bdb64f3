"""The per-user cache of converted models: verified on every read, rebuilt when damaged.

Location: ``$INTERP_CACHE`` if set, else the platform's user cache folder (platformdirs: on Linux
``$XDG_CACHE_HOME/interp``, else ``~/.cache/interp``).
An entry is a folder ``models/<name>-<key>/`` holding a float copy of a model (safetensors,
config, tokenizer files) and a ``manifest.json`` with the size and sha256 of every file.
Entries are written with :func:`interp.results.atomic.atomic_dir`, so a crash never leaves half of
one under the final name; a damaged entry (file missing, truncated or changed, bad manifest)
is removed and rebuilt, never trusted.

>>> import os, tempfile
>>> os.environ["INTERP_CACHE"] = tempfile.mkdtemp()   # a throwaway cache for this example
>>> def build(folder):
...     _ = (folder / "weights.bin").write_bytes(b"0123")
>>> entry = get_or_build("demo", "v1", build)
>>> entry.path.name, entry.built, check_entry(entry.path)
('demo-v1', True, None)
>>> get_or_build("demo", "v1", build).built      # verified and reused
False
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from interp.errors import CacheError, InterpError
from interp.logs import logger
from interp.models.bundled import BUNDLED
from interp.results.atomic import atomic_dir, atomic_write_text, file_sha256, stale_temps
from interp.results.strict_json import dumps

MANIFEST = "manifest.json"
FORMAT = 1  # bump when the entry layout changes: older entries then read as damaged and rebuild

State = Literal["absent", "ready", "damaged"]


def cache_dir() -> Path:
    """The root of the cache (not created here)."""
    if os.environ.get("INTERP_CACHE"):
        return Path(os.environ["INTERP_CACHE"]).expanduser()
    from platformdirs import user_cache_dir  # $XDG_CACHE_HOME/interp or ~/.cache/interp on Linux

    return Path(user_cache_dir("interp", appauthor=False))


def models_dir() -> Path:
    return cache_dir() / "models"


def _safe(part: str) -> str:
    # Folder names stay portable whatever a package version or file name contains.
    return re.sub(r"[^a-z0-9._-]+", "-", part.lower()).strip("-.") or "x"


def entry_path(name: str, key: str) -> Path:
    """``models/<name>-<key>`` under the cache root."""
    return models_dir() / f"{_safe(name)}-{_safe(key)}"


def _files_of(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST)


def write_manifest(folder: Path, **info: Any) -> dict[str, Any]:
    """Record size and sha256 of every file in ``folder`` (plus ``info``) in its manifest."""
    files = {
        rel: {"size": (folder / rel).stat().st_size, "sha256": file_sha256(folder / rel)}
        for rel in _files_of(folder)
    }
    manifest = {"format": FORMAT, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **info, "files": files}
    atomic_write_text(folder / MANIFEST, dumps(manifest, indent=2) + "\n")
    return manifest


def read_manifest(folder: Path) -> dict[str, Any]:
    return json.loads((folder / MANIFEST).read_text())


def check_entry(folder: str | os.PathLike[str], *, hashes: bool = True) -> str | None:
    """None if the entry is intact, else what is wrong with it (one line).

    ``hashes=False`` stops after the cheap checks (manifest, file list, sizes): a listing
    uses it; a load always hashes every file.
    """
    folder = Path(folder)
    try:
        manifest = read_manifest(folder)
        files = manifest["files"]
        if manifest.get("format") != FORMAT:
            return f"entry format {manifest.get('format')!r}, expected {FORMAT}"
        expected = {rel: (int(f["size"]), str(f["sha256"])) for rel, f in files.items()}
    except FileNotFoundError:
        return "no manifest.json"
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        return f"unreadable manifest.json ({type(exc).__name__}: {exc})"
    if not expected:
        return "manifest lists no files"
    present = set(_files_of(folder))
    if extra := present - expected.keys():
        # An unlisted file could change what from_pretrained loads.
        return f"unexpected file(s) {sorted(extra)}"
    # Cheap checks first: a missing or truncated file is found without hashing anything.
    for rel, (size, _) in expected.items():
        if rel not in present:
            return f"missing file {rel}"
        if (actual := (folder / rel).stat().st_size) != size:
            return f"{rel} has {actual} bytes, expected {size}"
    if not hashes:
        return None
    for rel, (_, sha) in expected.items():
        if file_sha256(folder / rel) != sha:
            return f"{rel} has the wrong sha256 (corrupted)"
    return None


def entry_size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def entry_state(folder: Path, *, hashes: bool = True) -> State:
    if not folder.exists():
        return "absent"
    return "ready" if check_entry(folder, hashes=hashes) is None else "damaged"


def lock_path(folder: Path) -> Path:
    """The lock file that guards building ``folder``: ``.<name>.lock`` beside it."""
    return folder.parent / f".{folder.name}.lock"


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """Hold an exclusive lock for ``folder`` so two processes never convert the same model at once.

    The lock file is removed again before the lock is released, so none is left in the cache.
    Removing it while still holding the lock (never after) is what keeps this safe: a process
    that was waiting on the removed file finds it unlinked once it gets the lock and retries
    on a fresh one (filelock checks the link count after locking).
    """
    from filelock import FileLock, Timeout

    folder.parent.mkdir(parents=True, exist_ok=True)
    path = lock_path(folder)
    lock = FileLock(str(path))
    try:
        lock.acquire(timeout=1)
    except Timeout:
        _warn(f"waiting for another process that is building {folder.name}")
        lock.acquire()
    try:
        yield
    finally:
        try:
            # A flock lock file is empty; one with content is a marker of filelock's soft
            # fallback (no flock on this file system), which removes itself on release.
            if path.stat().st_size == 0:
                path.unlink()
        except OSError:
            pass
        finally:
            lock.release()


def cache_error(exc: OSError) -> CacheError | None:
    """The ``CacheError`` for an ``OSError`` met while writing the cache, if that is what it is
    (a full disk, or no permission to write under the cache folder); else None."""
    if isinstance(exc, InterpError):
        return None
    root = cache_dir()
    where = f"the model cache {root} (set by INTERP_CACHE)" if os.environ.get("INTERP_CACHE") else \
        f"the model cache {root}"
    reason = exc.strerror or str(exc)
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return CacheError(f"{where} is full ({reason}) while a converted model is written to it; free some space "
                          "or set INTERP_CACHE to a folder on another disk")
    named = Path(os.fsdecode(exc.filename)) if exc.filename is not None else None
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR, errno.EEXIST) and (
            named is None or named == root or root in named.parents):
        return CacheError(f"{where} cannot be written ({reason}{f': {named}' if named else ''}); make it a writable "
                          "folder or set INTERP_CACHE to one")
    return None


@dataclass(frozen=True)
class Entry:
    path: Path
    built: bool  # True when this call (re)built it, False when a verified entry was reused


def _warn(message: str) -> None:
    logger(__name__).warning(message)


def get_or_build(name: str, key: str, build: Callable[[Path], None], **info: Any) -> Entry:
    """The verified cache entry for (``name``, ``key``), calling ``build(folder)`` if needed.

    ``build`` writes the entry's files into the empty ``folder`` it is given; the manifest
    is added afterwards from what it wrote. ``info`` is recorded in the manifest.
    """
    path = entry_path(name, key)
    if path.exists() and check_entry(path) is None:
        return Entry(path, built=False)  # a verified entry needs no write access: a read-only cache serves it
    try:
        with _locked(path):
            # Another process may have built it while we waited for the lock.
            if path.exists():
                problem = check_entry(path)
                if problem is None:
                    return Entry(path, built=False)
                _warn(f"cache entry {path} is damaged ({problem}); removing it and rebuilding")
                shutil.rmtree(path)
            for stale in stale_temps(path):  # left by a killed build; we hold the lock, so not in use
                shutil.rmtree(stale, ignore_errors=True)
            with atomic_dir(path) as tmp:
                build(tmp)
                write_manifest(tmp, name=name, key=key, **info)
    except OSError as exc:
        error = cache_error(exc)
        if error is None:
            raise
        raise error from exc
    return Entry(path, built=True)


@dataclass(frozen=True)
class BundledState:
    """Install and cache state of one bundled model (what ``interp models`` shows)."""

    name: str
    package: str
    version: str | None  # None: not installed
    state: State | None  # None: not installed, so no key to look the entry up by
    size: int  # bytes on disk of the cache entry, 0 if absent
    path: Path | None
    install_command: str
    description: str
    hashed: bool = False  # True: "ready" includes the sha256 of every file, not only sizes


def bundled_states(*, hashes: bool = False) -> list[BundledState]:
    """One row per bundled model.

    By default a present entry gets the cheap check (manifest, file list, sizes), which
    finds a missing or truncated file at once; ``hashes=True`` also hashes every file (about a
    second per GB), as every load does anyway.
    """
    rows = []
    for model in BUNDLED.values():
        version = model.version()
        path = state = None
        size = 0
        if version is not None:
            path = entry_path(model.name, model.cache_key())
            state = entry_state(path, hashes=hashes)
            size = entry_size(path) if state != "absent" else 0
        rows.append(
            BundledState(
                model.name,
                model.package,
                version,
                state,
                size,
                path,
                model.install_command,
                model.description,
                hashed=hashes,
            )
        )
    return rows
