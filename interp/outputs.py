"""Output folders that never lose a user's files.

A command writes its report into a folder through :func:`output_folder`, which

- refuses a path that is an existing file, and a folder holding files that interp did not
  write (unless ``force=True``, which still replaces only interp's own files);
- holds a lock on the folder for the whole run, so a second run on the same folder fails at
  once instead of interleaving with the first;
- stages every file in a hidden folder inside the destination and moves them into place only
  when the run succeeds, so a failed run leaves the previous report as it was;
- records what it wrote in ``.interp-manifest.json``; a later run replaces those files and
  removes the ones it no longer writes, and nothing else.

Everything interp keeps in the folder besides the report is named ``.interp-*``: the manifest,
the lock (removed when the run ends), the staging folder (removed when the run ends) and a
resumable checkpoint (removed when the report is complete).

>>> import tempfile, pathlib
>>> folder = pathlib.Path(tempfile.mkdtemp()) / "report"
>>> with output_folder(folder) as out:
...     _ = out.write_text("summary.json", '{"ok": true}')
>>> sorted(p.name for p in folder.iterdir())
['.interp-manifest.json', 'summary.json']
>>> _ = (folder / "notes.txt").write_text("mine")
>>> try:
...     check_output(folder)
... except OutputError as exc:
...     print(str(exc).split(": ", 1)[1].split(";")[0])
it holds files interp did not write (notes.txt)
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path

from interp.errors import InterpError

MANIFEST = ".interp-manifest.json"
LOCK = ".interp.lock"
CHECKPOINT = ".interp-checkpoint"
_STAGING = ".interp-staging-"
_OURS_PREFIX = ".interp"


class OutputError(InterpError, OSError):
    """An output path that cannot be written without harming what is there."""


def _is_ours(entry: Path, manifest: set[str]) -> bool:
    if entry.name.startswith(_OURS_PREFIX) or entry.name in manifest:
        return True
    # A subfolder holding our manifest is a report of ours (e.g. one per model).
    return entry.is_dir() and not entry.is_symlink() and (entry / MANIFEST).is_file()


def read_manifest(folder: Path) -> set[str]:
    """Names of the files interp wrote in ``folder`` (empty if it holds no manifest)."""
    try:
        data = json.loads((folder / MANIFEST).read_text())
        return {str(n) for n in data.get("files", [])}
    except (OSError, ValueError, AttributeError):
        return set()


def foreign_entries(folder: Path, claimed: Iterable[str] = ()) -> list[str]:
    """Entries of ``folder`` that interp did not write (and that are not in ``claimed``)."""
    if not folder.is_dir():
        return []
    manifest = read_manifest(folder) | set(claimed)
    return sorted(e.name for e in folder.iterdir() if not _is_ours(e, manifest))


def check_output(path: str | os.PathLike[str], *, force: bool = False, what: str = "output folder") -> Path:
    """Raise ``OutputError`` unless ``path`` can take a report without touching anyone's files.

    Checks only; writes nothing. Commands call it for every folder they will write before
    any work starts.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputError(f"{what} {path} is an existing file; give a folder (new, empty, or one interp wrote)")
    if path.is_dir():
        foreign = foreign_entries(path)
        if foreign and not force:
            shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
            raise OutputError(
                f"refusing to write into {path}: it holds files interp did not write ({shown}); choose a new "
                "or empty folder, or pass --force (force=True) to write beside them (only interp's own files "
                "are replaced)"
            )
    parent = _existing_parent(path)
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"cannot write {what} {path}: {parent} is not writable")
    return path


def _existing_parent(path: Path) -> Path:
    p = path.absolute()
    while not p.exists():
        p = p.parent
    return p


class OutputFolder:
    """A folder being written by one run; files land in place when the run succeeds."""

    def __init__(self, path: Path, staging: Path, manifest: set[str]):
        self.path, self._staging, self._old = path, staging, manifest
        self._written: list[str] = []
        self._subfolders: set[str] = set()

    def file(self, name: str) -> Path:
        """A path to write ``name`` to (in the staging folder), for writers that want a path."""
        _check_name(name)
        if name not in self._written:
            self._written.append(name)
        return self._staging / name

    def write_bytes(self, name: str, data: bytes) -> Path:
        self.file(name).write_bytes(data)
        return self.path / name

    def write_text(self, name: str, text: str) -> Path:
        return self.write_bytes(name, text.encode("utf-8"))

    @property
    def checkpoint(self) -> Path:
        """Where this run keeps resumable progress (a stamped folder of ours)."""
        return self.path / CHECKPOINT

    @contextlib.contextmanager
    def subfolder(self, name: str, *, force: bool = False) -> Iterator[OutputFolder]:
        """A report of its own inside this one (its files land when its block ends)."""
        _check_name(name)
        with output_folder(self.path / name, force=force) as sub:
            yield sub
        self._subfolders.add(name)

    def _commit(self) -> None:
        new = set(self._written) | self._subfolders
        # List the union first: a kill between the moves below leaves no file of ours unlisted.
        _write_manifest(self.path, self._old | new)
        for name in self._written:
            target = self.path / name
            if target.is_dir() and not target.is_symlink():
                raise OutputError(f"cannot write {target}: a folder of that name is in the way")
            os.replace(self._staging / name, target)
        for name in sorted(self._old - new):
            stale = self.path / name
            if stale.is_file() or stale.is_symlink():
                stale.unlink()
        _write_manifest(self.path, new)
        _fsync_dir(self.path)


def _check_name(name: str) -> None:
    if Path(name).name != name or name.startswith(_OURS_PREFIX) or name in ("", ".", ".."):
        raise OutputError(f"report file name {name!r} must be a plain file name not starting with {_OURS_PREFIX}")


def _write_manifest(folder: Path, names: set[str]) -> None:
    tmp = folder / f"{_STAGING}manifest-{uuid.uuid4().hex[:8]}"
    tmp.write_text(json.dumps({"written_by": "interp", "files": sorted(names)}, indent=1) + "\n")
    os.replace(tmp, folder / MANIFEST)


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def folder_lock(folder: Path, what: str = "output folder") -> Iterator[None]:
    """Hold ``folder``'s lock; a second holder fails at once with a clear message."""
    from filelock import FileLock, Timeout

    lock_path = folder / LOCK
    lock = FileLock(str(lock_path), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise OutputError(
            f"another interp run is writing to {what} {folder} (it holds {LOCK}); wait for it to finish or "
            "choose another folder"
        ) from None
    except PermissionError as exc:
        raise OutputError(f"cannot write {what} {folder}: {exc.strerror or 'permission denied'}") from None
    try:
        yield
    finally:
        # Removed while still held, so no other run can be holding this inode.
        lock_path.unlink(missing_ok=True)
        lock.release()


@contextlib.contextmanager
def output_folder(path: str | os.PathLike[str], *, force: bool = False,
                  what: str = "output folder") -> Iterator[OutputFolder]:
    """Write a report into ``path`` without touching files interp did not write.

    The folder is checked and locked on entry (before the caller does any work); the files
    written through the yielded :class:`OutputFolder` land when the block ends without an
    error. A folder this call created is removed again if the block fails before anything
    landed.
    """
    path = check_output(path, force=force, what=what)
    created = not path.exists()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create {what} {path}: {exc.strerror or exc}") from None
    try:
        with folder_lock(path, what):
            check_output(path, force=force, what=what)  # again, now that no other run can change it
            for stale in path.glob(f"{_STAGING}*"):  # left by a killed run; we hold the lock
                shutil.rmtree(stale, ignore_errors=True) if stale.is_dir() else stale.unlink(missing_ok=True)
            staging = path / f"{_STAGING}{uuid.uuid4().hex[:12]}"
            try:
                staging.mkdir()
            except OSError as exc:
                raise OutputError(f"cannot write {what} {path}: {exc.strerror or exc}") from None
            out = OutputFolder(path, staging, read_manifest(path))
            try:
                yield out
                out._commit()
                if out.checkpoint.is_dir():  # the report is complete: its resumable progress is spent
                    shutil.rmtree(out.checkpoint)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
    finally:
        if created and path.is_dir() and not any(path.iterdir()):
            path.rmdir()


@contextlib.contextmanager
def writing(dest: str | os.PathLike[str] | OutputFolder, *, force: bool = False) -> Iterator[OutputFolder]:
    """``dest`` as an :class:`OutputFolder`: a path is opened (and committed) here, an open
    folder is used as it is (its owner commits it)."""
    if isinstance(dest, OutputFolder):
        yield dest
        return
    with output_folder(dest, force=force) as out:
        yield out
