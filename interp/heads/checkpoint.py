"""Partial results of a long sweep, one safetensors file per finished unit of work, so an
interrupted sweep resumes where it stopped. Tied to a fingerprint of everything the numbers
depend on: the model's weights (a digest of the tensors in memory), its dtype and device kind,
the settings and interp's version."""

from __future__ import annotations

import hashlib
import json
import logging
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors.torch import load_file, save_file

from interp.models.fingerprint import weights_digest
from interp.results.atomic import atomic_write_text, temp_sibling
from interp.results.folders import STAMP, OutputError, discard_checkpoint, is_checkpoint
from interp.results.strict_json import dumps
from interp.results.versions import versions

if TYPE_CHECKING:
    from interp.core.model import Model

logger = logging.getLogger("interp")


def fingerprint(model: Model, settings: dict[str, Any]) -> dict[str, Any]:
    """What a scan's units depend on, as the checkpoint records it."""

    return {"model": model.name, "weights": weights_digest(model.hf), "dtype": str(model.hf.dtype),
            "device": torch.device(model.device).type, "interp": versions()["interp"],
            "settings": hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()}


class Checkpoint:
    """Finished units under ``folder``, tied to the fingerprint of what produced them.

    A checkpoint whose stamp records another fingerprint (other weights, dtype, device kind,
    settings or interp version) is cleared and the run starts afresh, saying which of these
    differ. Only a folder interp created and stamped is ever cleared: an existing folder
    without the stamp is used only if it is empty, and a file, a link or a folder holding
    anything else is refused.
    """

    def __init__(self, folder: str | Path | None, stamp: dict[str, Any]):
        self.folder = Path(folder) if folder is not None else None
        self._memory: dict[str, Any] = {}  # without a folder, results live here for one run
        if self.folder is None:
            return
        if self.folder.is_symlink():
            raise OutputError(f"checkpoint {self.folder} is a link; interp writes checkpoints only into real folders "
                              "(remove the link or give another folder)")
        if self.folder.exists() and not self.folder.is_dir():
            raise OutputError(f"checkpoint {self.folder} is an existing file; give a folder (new or one interp made)")
        if self.folder.is_dir() and not is_checkpoint(self.folder) and any(self.folder.iterdir()):
            raise OutputError(
                f"checkpoint folder {self.folder} holds files interp did not write and has no {STAMP}; "
                "give a new or empty folder"
            )
        recorded = self._recorded()
        if recorded is not None and recorded != stamp:
            changed = sorted(k for k in {*stamp, *recorded} if stamp.get(k) != recorded.get(k))
            logger.warning("checkpoint %s was written with another %s; starting afresh", self.folder, ", ".join(changed))
            self.clear()
        elif recorded is None and is_checkpoint(self.folder):  # a stamp of an older interp, or damaged
            self.clear()
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            if not (self.folder / STAMP).exists():
                atomic_write_text(self.folder / STAMP, dumps(stamp, sort_keys=True))
        except OSError as exc:
            raise OutputError(f"cannot write checkpoint folder {self.folder}: {exc.strerror or exc}") from None

    def _recorded(self) -> dict[str, Any] | None:
        assert self.folder is not None
        try:
            recorded = json.loads((self.folder / STAMP).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return recorded if isinstance(recorded, dict) else None

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
        if self.folder is not None:
            discard_checkpoint(self.folder)
