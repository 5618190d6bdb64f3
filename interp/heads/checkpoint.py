"""Partial results of a long sweep, one safetensors file per finished unit of work, so an
interrupted sweep resumes where it stopped. Tied to the settings that produced it."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from interp.atomic import atomic_write_text, temp_sibling
from interp.outputs import OutputError
from interp.strict_json import dumps

STAMP = "settings.sha256"


class Checkpoint:
    """Finished units under ``folder``, tied to the settings that produced them.

    Only a folder interp created and stamped is ever cleared: a folder written with other
    settings loses its unit files; an existing folder without the stamp is used only if it
    is empty, and a file or a folder holding anything else is refused.
    """

    def __init__(self, folder: str | Path | None, settings: dict[str, Any]):
        self.folder = Path(folder) if folder is not None else None
        self._memory: dict[str, Any] = {}  # without a folder, results live here for one run
        fingerprint = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()
        if self.folder is None:
            return
        stamp = self.folder / STAMP
        if self.folder.exists() and not self.folder.is_dir():
            raise OutputError(f"checkpoint {self.folder} is an existing file; give a folder (new or one interp made)")
        if self.folder.is_dir() and not stamp.is_file() and any(self.folder.iterdir()):
            raise OutputError(
                f"checkpoint folder {self.folder} holds files interp did not write and has no {STAMP}; "
                "give a new or empty folder"
            )
        if stamp.is_file() and stamp.read_text().strip() != fingerprint:
            self.clear()
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            if not stamp.exists():
                atomic_write_text(stamp, fingerprint)
        except OSError as exc:
            raise OutputError(f"cannot write checkpoint folder {self.folder}: {exc.strerror or exc}") from None

    def _path(self, key: str) -> Path:
        assert self.folder is not None
        return self.folder / (re.sub(r"[^\w.=-]", "_", key) + ".safetensors")

    def get(self, key: str) -> dict[str, torch.Tensor] | None:
        if self.folder is None:
            return self._memory.get(key)
        if not self._path(key).exists():
            return None
        return load_file(self._path(key))

    def put(self, key: str, tensors: dict[str, torch.Tensor]) -> None:
        if self.folder is None:
            self._memory[key] = tensors
            return
        path = self._path(key)
        tmp = temp_sibling(path)
        save_file({k: v.contiguous().cpu() for k, v in tensors.items()}, str(tmp))
        tmp.replace(path)

    def get_json(self, key: str) -> Any:
        """A unit's result stored as JSON (``put_json``), or None."""
        if self.folder is None:
            return self._memory.get(key + ".json")
        path = self._path(key).with_suffix(".json")
        return json.loads(path.read_text()) if path.exists() else None

    def put_json(self, key: str, value: Any) -> None:
        if self.folder is None:
            self._memory[key + ".json"] = json.loads(dumps(value))  # as it would read back
        else:
            atomic_write_text(self._path(key).with_suffix(".json"), dumps(value))

    def clear(self) -> None:
        """Remove the unit files and the stamp (ours), then the folder if nothing else is in it."""
        if self.folder is None or not (self.folder / STAMP).is_file():
            return
        for path in [*self.folder.glob("*.safetensors"), *self.folder.glob("*.json")]:
            path.unlink()
        for path in self.folder.glob(".*.tmp-*"):  # units being written when a run was killed
            path.unlink()
        (self.folder / STAMP).unlink()
        if not any(self.folder.iterdir()):
            self.folder.rmdir()
