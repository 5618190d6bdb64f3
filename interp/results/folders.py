"""Output folders that never lose a user's files.

A command writes its report into a folder through :func:`output_folder`, which

- refuses a path that is an existing file, and a folder holding files that interp did not
  write (unless ``force=True``, which writes beside them: a file interp did not write is never
  replaced or deleted, and a clash of names is refused, naming the file);
- holds a lock on the folder for the whole run, so a second run on the same folder fails at
  once instead of interleaving with the first;
- stages every file in a hidden folder inside the destination and moves them into place only
  when the run succeeds, so a failed run leaves the previous report as it was;
- records what it wrote in ``.interp-manifest.json``: each file's name, the kind of report it
  belongs to (``heads``, ``neurons``, ...) and its sha256. A later run of the same kind replaces
  those files and removes the ones it no longer writes; reports of other kinds stay beside it.

The folder is a security boundary, and the manifest is data anyone may edit, so it is validated
before anything is touched: every name must be a plain file name inside the folder (no
separators, no ``..``), a file counts as interp's only while it is a regular file (no link)
whose bytes still have the recorded sha256, and a subfolder only while it holds a manifest of
its own. A damaged manifest is refused with a message, never half-trusted. interp's own hidden
entries have exact names a user would not choose (the manifest, the lock, staging folders
``.interp-staging-<hex>``, the checkpoint folder) and are recognised by those names and shapes,
not by a prefix.

>>> import tempfile, pathlib
>>> folder = pathlib.Path(tempfile.mkdtemp()) / "report"
>>> with output_folder(folder, kind="notes") as out:
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
import re
import shutil
import stat
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from interp.errors import OutputError
from interp.results.atomic import file_sha256, fsync_dir
from interp.results.strict_json import dumps

MANIFEST = ".interp-manifest.json"
LOCK = ".interp.lock"
CHECKPOINT = ".interp-checkpoint"
_STAGING = ".interp-staging-"
_STAGING_NAME = re.compile(r"\.interp-staging-(manifest-)?[0-9a-f]{8,12}")
_RESERVED = (MANIFEST, LOCK, CHECKPOINT)
STAMP = "fingerprint.stamp"  # what a checkpoint's units depend on (interp.heads.checkpoint)
_LEGACY_STAMP = "settings.sha256"  # the stamp of checkpoints written before fingerprints
FORMAT = 2  # manifest format: 2 records kind and sha256 per file (1, a bare list of names, is not trusted)
_MAX_NAME = 255
_KIND = re.compile(r"[a-z][a-z0-9_]{0,31}")


@dataclass(frozen=True)
class Entry:
    """One manifest record: the report kind a file or subfolder belongs to, and a file's sha256."""

    kind: str
    sha256: str | None  # None: a subfolder (a report of its own, with its own manifest)


def _bad_name(name: object) -> str | None:
    """Why ``name`` is not a plain file name inside a folder (None if it is)."""
    if not isinstance(name, str) or not name:
        return "not a non-empty string"
    if name in (".", "..") or any(c in name for c in "/\\\0"):
        return "not a plain file name (separators, '.' and '..' reach outside the folder)"
    if len(name.encode("utf-8", "surrogatepass")) > _MAX_NAME:
        return f"longer than {_MAX_NAME} bytes"
    if name in _RESERVED or _STAGING_NAME.fullmatch(name):
        return "one of interp's own hidden names"
    return None


def _regular_file(path: Path) -> bool:
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


def _manifest_error(folder: Path, problem: str) -> OutputError:
    return OutputError(
        f"{folder / MANIFEST} is not a manifest interp can trust ({problem}); interp cannot tell its files "
        f"from yours there: remove that file (everything in {folder} then counts as yours) or choose another folder"
    )


def read_manifest(folder: Path) -> dict[str, Entry]:
    """What interp recorded writing in ``folder``, validated (empty if it holds no manifest).

    Raises ``OutputError`` for a manifest that is a link, not strict JSON, of another format,
    or that names anything but plain file names inside the folder.
    """
    path = folder / MANIFEST
    if not os.path.lexists(path):
        return {}
    if not _regular_file(path):
        raise _manifest_error(folder, "it is a link or not a regular file")
    try:
        data = json.loads(path.read_bytes().decode("utf-8"), parse_constant=_no_constant)
    except (OSError, ValueError) as exc:
        raise _manifest_error(folder, f"unreadable: {exc}") from None
    if not isinstance(data, dict) or data.get("written_by") != "interp":
        raise _manifest_error(folder, "not written by interp")
    if data.get("format") != FORMAT or not isinstance(data.get("files"), dict):
        raise _manifest_error(folder, f"format {data.get('format', 1)!r}, not {FORMAT}: written by an older interp, "
                                      "without checksums")
    entries: dict[str, Entry] = {}
    for name, record in data["files"].items():
        why = _bad_name(name)
        if why is None and not (isinstance(record, dict) and isinstance(record.get("kind"), str)
                                and _KIND.fullmatch(record["kind"])):
            why = "recorded without a valid report kind"
        sha = record.get("sha256") if isinstance(record, dict) else None
        is_folder = isinstance(record, dict) and record.get("folder") is True
        if why is None and not is_folder and not (isinstance(sha, str) and re.fullmatch(r"[0-9a-f]{64}", sha)):
            why = "recorded without a valid sha256"
        if why is not None:
            raise _manifest_error(folder, f"the entry {name!r} is {why}")
        entries[name] = Entry(record["kind"], None if is_folder else sha)
    return entries


def _no_constant(constant: str) -> None:
    raise ValueError(f"{constant} is not JSON")


def _owned(folder: Path, name: str, entry: Entry | None) -> bool:
    """Whether ``folder/name`` is still exactly what interp recorded writing there."""
    if entry is None:
        return False
    path = folder / name
    if entry.sha256 is None:  # a report of ours in a subfolder
        return _report_folder(path)
    return _regular_file(path) and file_sha256(path) == entry.sha256


def _report_folder(entry: Path) -> bool:
    """A report of interp's in a subfolder (a real folder with its own manifest), even one written
    on its own; such a folder is never replaced or deleted by a run of the folder around it."""
    return entry.is_dir() and not entry.is_symlink() and _regular_file(entry / MANIFEST)


def _is_internal(entry: Path) -> bool:
    """interp's own hidden entries, by their exact names and shapes."""
    if entry.name == MANIFEST:
        return _regular_file(entry)
    if entry.name == LOCK:  # an empty file (a lock left by a killed run has no content either)
        return _regular_file(entry) and entry.stat().st_size == 0
    if _STAGING_NAME.fullmatch(entry.name):
        return (entry.is_dir() and not entry.is_symlink()) or _regular_file(entry)
    if entry.name == CHECKPOINT:
        return is_checkpoint(entry)
    return False


def is_checkpoint(folder: Path) -> bool:
    """A checkpoint folder interp made: a real folder (no link) holding its stamp, or holding only
    such folders (one per model of a sweep)."""
    if folder.is_symlink() or not folder.is_dir():
        return False
    if _regular_file(folder / STAMP) or _regular_file(folder / _LEGACY_STAMP):
        return True
    return all(is_checkpoint(entry) for entry in folder.iterdir())


def discard_checkpoint(folder: Path) -> None:
    """Remove a checkpoint interp made: its unit files and stamps, then every folder left empty.
    Anything else found inside stays (and so does its folder)."""
    if not is_checkpoint(folder):
        return
    for entry in folder.iterdir():
        if entry.is_dir() and not entry.is_symlink():
            discard_checkpoint(entry)
        elif _regular_file(entry) and (entry.suffix in (".safetensors", ".json") or ".tmp-" in entry.name
                                       or entry.name in (STAMP, _LEGACY_STAMP)):
            entry.unlink()
    if not any(folder.iterdir()):
        folder.rmdir()


def foreign_entries(folder: Path, claimed: Iterable[str] = ()) -> list[str]:
    """Entries of ``folder`` that interp did not write (and that are not in ``claimed``)."""
    if not folder.is_dir():
        return []
    manifest = read_manifest(folder)
    claimed = set(claimed)
    return sorted(e.name for e in folder.iterdir() if e.name not in claimed and not _is_internal(e)
                  and not _owned(folder, e.name, manifest.get(e.name)) and not _report_folder(e))


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
                "or empty folder, or pass --force (force=True) to write beside them (they are never replaced: "
                "a name clash is refused)"
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
    """A folder being written by one run of report ``kind``; files land when the run succeeds."""

    def __init__(self, path: Path, staging: Path, manifest: dict[str, Entry], kind: str):
        self.path, self._staging, self._old, self.kind = path, staging, manifest, kind
        self._written: list[str] = []
        self._subfolders: set[str] = set()
        self._kept: set[str] = set()

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

    def keep(self, *names: str) -> None:
        """Files of this report that this run leaves as they are (a summary rendered again from
        saved tables keeps the tables): they stay listed as this report's instead of being removed
        as files it no longer writes. A name that is not this kind's own file is left alone anyway."""
        for name in names:
            _check_name(name)
            self._kept.add(name)

    @property
    def checkpoint(self) -> Path:
        """Where this run keeps resumable progress (a stamped folder of ours)."""
        return self.path / CHECKPOINT

    @contextlib.contextmanager
    def subfolder(self, name: str, *, force: bool = False) -> Iterator[OutputFolder]:
        """A report of its own inside this one (its files land when its block ends)."""
        _check_name(name)
        self._claimable(name)
        if name not in self._old:  # listed before it is written: a run killed inside it leaves it ours
            self._old[name] = Entry(self.kind, None)
            _write_manifest(self.path, self._old)
        with output_folder(self.path / name, force=force, kind=self.kind) as sub:
            yield sub
        self._subfolders.add(name)

    def _claimable(self, name: str) -> None:
        """Refuse to write ``name`` over anything but this kind's own earlier file of that name."""
        target = self.path / name
        if not os.path.lexists(target):
            return
        entry = self._old.get(name)
        if not _owned(self.path, name, entry):
            raise OutputError(
                f"refusing to replace {target}: interp did not write it (or it changed since); move it away or "
                "choose another folder"
            )
        assert entry is not None
        if entry.kind != self.kind:
            raise OutputError(
                f"refusing to replace {target}: it belongs to the {entry.kind} report in {self.path}; write the "
                f"{self.kind} report to another folder"
            )

    def _commit(self) -> None:
        for name in self._written:  # every check before the first move: all files land, or none
            self._claimable(name)
            if (self.path / name).is_dir() and not (self.path / name).is_symlink():
                raise OutputError(f"cannot write {self.path / name}: a folder of that name is in the way")
        records = {name: Entry(self.kind, file_sha256(self._staging / name)) for name in self._written}
        records |= {name: Entry(self.kind, None) for name in self._subfolders}
        records |= {name: e for name, e in self._old.items() if name in self._kept and name not in records
                    and e.kind == self.kind and _owned(self.path, name, e)}
        stale = [n for n, e in self._old.items() if e.kind == self.kind and n not in records
                 and _owned(self.path, n, e)]
        others = {n: e for n, e in self._old.items() if e.kind != self.kind or n in stale}
        # List the union first: a kill between the moves below leaves no file of ours unlisted.
        _write_manifest(self.path, others | records)
        for name in self._written:
            os.replace(self._staging / name, self.path / name)
        for name in stale:
            if self._old[name].sha256 is not None:
                (self.path / name).unlink()
        _write_manifest(self.path, {n: e for n, e in others.items() if n not in stale} | records)
        fsync_dir(self.path)


def kind_for(name: str) -> str:
    """A report kind made from a name (a script's output stem such as ``main_job_long_cpu``):
    lowercase letters, digits and ``_``, at most 32 characters.

    >>> kind_for("Triton-AOT.v2")
    'triton_aot_v2'
    """
    kind = re.sub(r"[^a-z0-9_]+", "_", name.lower()).strip("_")[:32]
    return kind if _KIND.fullmatch(kind) else f"r_{kind}"[:32]


def _check_name(name: str) -> None:
    why = _bad_name(name)
    if why is not None:
        raise OutputError(f"report file name {name!r} is {why}")


def _write_manifest(folder: Path, entries: dict[str, Entry]) -> None:
    files = {name: {"kind": e.kind, **({"sha256": e.sha256} if e.sha256 else {"folder": True})}
             for name, e in sorted(entries.items())}
    tmp = folder / f"{_STAGING}manifest-{uuid.uuid4().hex[:8]}"
    tmp.write_text(dumps({"written_by": "interp", "format": FORMAT, "files": files}, indent=1) + "\n")
    os.replace(tmp, folder / MANIFEST)


@contextlib.contextmanager
def folder_lock(folder: Path, what: str = "output folder") -> Iterator[None]:
    """Hold ``folder``'s lock; a second holder fails at once with a clear message."""
    from filelock import FileLock, Timeout

    lock_path = folder / LOCK
    if os.path.lexists(lock_path) and not _is_internal(lock_path):  # never open (or follow) a user's file
        raise OutputError(f"refusing to write into {what} {folder}: its {LOCK} is not a lock of interp's (a link or "
                          "a file with content); move it away or choose another folder")
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
def output_folder(path: str | os.PathLike[str], *, force: bool = False, what: str = "output folder",
                  kind: str = "report") -> Iterator[OutputFolder]:
    """Write a report of ``kind`` (``heads``, ``neurons``, ...) into ``path`` without touching
    files interp did not write, nor the reports of other kinds there.

    The folder is checked and locked on entry (before the caller does any work); the files
    written through the yielded :class:`OutputFolder` land when the block ends without an
    error. A folder this call created is removed again if the block fails before anything
    landed.
    """
    if not _KIND.fullmatch(kind):
        raise ValueError(f"report kind {kind!r} must be a short lowercase identifier")
    path = check_output(path, force=force, what=what)
    created = not path.exists()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create {what} {path}: {exc.strerror or exc}") from None
    try:
        with folder_lock(path, what):
            check_output(path, force=force, what=what)  # again, now that no other run can change it
            for stale in path.iterdir():  # staging left by a killed run; we hold the lock
                if _STAGING_NAME.fullmatch(stale.name) and _is_internal(stale):
                    shutil.rmtree(stale) if stale.is_dir() else stale.unlink()
            staging = path / f"{_STAGING}{uuid.uuid4().hex[:12]}"
            try:
                staging.mkdir()
            except OSError as exc:
                raise OutputError(f"cannot write {what} {path}: {exc.strerror or exc}") from None
            out = OutputFolder(path, staging, read_manifest(path), kind)
            try:
                yield out
                out._commit()
                discard_checkpoint(out.checkpoint)  # the report is complete: its resumable progress is spent
            finally:
                shutil.rmtree(staging, ignore_errors=True)
    finally:
        if created and path.is_dir() and not any(path.iterdir()):
            path.rmdir()


@contextlib.contextmanager
def writing(dest: str | os.PathLike[str] | OutputFolder, *, force: bool = False,
            kind: str = "report") -> Iterator[OutputFolder]:
    """``dest`` as an :class:`OutputFolder`: a path is opened (and committed) here for a report
    of ``kind``, an open folder is used as it is (its owner commits it, under its own kind)."""
    if isinstance(dest, OutputFolder):
        yield dest
        return
    with output_folder(dest, force=force, kind=kind) as out:
        yield out
