"""Write files and folders atomically: readers see the old version or the new one, never half.

Every writer goes to a temporary name in the destination's own folder (so the final rename
never crosses file systems), flushes it to disk, then renames it into place with
``os.replace``.

>>> import tempfile, pathlib
>>> folder = pathlib.Path(tempfile.mkdtemp())
>>> atomic_write_text(folder / "report.json", '{"ok": true}')
>>> (folder / "report.json").read_text()
'{"ok": true}'
>>> with atomic_dir(folder / "entry") as tmp:
...     _ = (tmp / "a.txt").write_text("hello")
>>> sorted(p.name for p in (folder / "entry").iterdir())
['a.txt']
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

_TMP_MARK = ".tmp-"


def file_sha256(*paths: str | os.PathLike[str]) -> str:
    """Streamed sha256 of a file, or of several files' bytes one after the other (about 1.7 GB/s
    on a CPU with SHA extensions)."""
    digest = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as f:
            while block := f.read(8 << 20):
                digest.update(block)
    return digest.hexdigest()


def temp_sibling(path: str | os.PathLike[str]) -> Path:
    """A fresh hidden name next to ``path``, e.g. ``.report.json.tmp-1a2b3c4d``."""
    path = Path(path)
    return path.with_name(f".{path.name}{_TMP_MARK}{uuid.uuid4().hex[:12]}")


def stale_temps(path: str | os.PathLike[str]) -> list[Path]:
    """Temporary siblings of ``path`` left behind by writers that were killed."""
    path = Path(path)
    return sorted(path.parent.glob(f".{path.name}{_TMP_MARK}*"))


def fsync_dir(folder: Path) -> None:
    # Makes the rename itself durable; not possible on every platform (e.g. Windows).
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` so that ``path`` is either untouched or complete."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_sibling(path)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def atomic_write_text(path: str | os.PathLike[str], text: str, encoding: str = "utf-8") -> None:
    """Text version of :func:`atomic_write_bytes`."""
    atomic_write_bytes(path, text.encode(encoding))


def _fsync_tree(folder: Path) -> None:
    for root, _dirs, files in os.walk(folder):
        for name in files:
            fd = os.open(os.path.join(root, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_dir(Path(root))


@contextlib.contextmanager
def atomic_dir(final_path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield an empty temporary sibling folder; on success it becomes ``final_path``.

    On an exception the temporary folder is removed and ``final_path`` is left as it was.
    An existing ``final_path`` is replaced: it is first renamed aside (so the new folder can
    take its name in one rename) and deleted afterwards.
    """
    final = Path(final_path)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_sibling(final)
    tmp.mkdir()
    try:
        yield tmp
        _fsync_tree(tmp)
        old = None
        if final.exists():
            old = temp_sibling(final)
            os.replace(final, old)
        try:
            os.replace(tmp, final)
        except BaseException:
            if old is not None:
                os.replace(old, final)  # put the previous version back
            raise
        fsync_dir(final.parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
