"""Partial results of a long sweep, one safetensors file per finished unit of work, so an
interrupted sweep resumes where it stopped. Tied to the settings that produced it."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from interp.atomic import atomic_write_text, temp_sibling


class Checkpoint:
    """Finished units under ``folder``; a folder written with other settings is discarded."""

    def __init__(self, folder: str | Path | None, settings: dict[str, Any]):
        self.folder = Path(folder) if folder is not None else None
        fingerprint = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()
        if self.folder is None:
            return
        stamp = self.folder / "settings.sha256"
        if self.folder.exists() and (not stamp.exists() or stamp.read_text().strip() != fingerprint):
            shutil.rmtree(self.folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        if not stamp.exists():
            atomic_write_text(stamp, fingerprint)

    def _path(self, key: str) -> Path:
        assert self.folder is not None
        return self.folder / (re.sub(r"[^\w.=-]", "_", key) + ".safetensors")

    def get(self, key: str) -> dict[str, torch.Tensor] | None:
        if self.folder is None or not self._path(key).exists():
            return None
        return load_file(self._path(key))

    def put(self, key: str, tensors: dict[str, torch.Tensor]) -> None:
        if self.folder is None:
            return
        path = self._path(key)
        tmp = temp_sibling(path)
        save_file({k: v.contiguous().cpu() for k, v in tensors.items()}, str(tmp))
        tmp.replace(path)

    def clear(self) -> None:
        if self.folder is not None and self.folder.exists():
            shutil.rmtree(self.folder)
