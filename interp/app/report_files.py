"""Finding and reading the report folders the app shows (JSON, parquet, safetensors; never pickle).

A report is a folder holding one of the marker files below. ``find_reports`` scans folders
recursively, passing over hidden files and folders (a writer's ``.interp-manifest.json`` or
``.interp.lock``, ``.git``); each ``read_*`` checks the file against the schema the page needs
and raises ``ReportError`` naming the file and what is missing, so a page can show one clear
message (pages show its paths through ``paths.display_text``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import pandas as pd

from interp.errors import InterpError

# Report kind -> the file that marks a folder as such a report.
MARKERS = {"heads": "head_scores.json", "neurons": "neurons.parquet", "knob": "knob.json", "circuits": "icl.json"}

SKIP_DIRS = {".git", ".venv", "node_modules", "__pycache__"}


class ReportError(InterpError, ValueError):
    """A report file that is missing, unreadable or not in the expected shape."""


@dataclass(frozen=True)
class Report:
    """One report folder: its kind, where it is, and a label for pickers."""

    kind: str
    folder: Path
    label: str


def default_dirs() -> list[Path]:
    """``reports/`` under the working directory plus the committed case-study results (shipped
    with the package, so an installed wheel shows them too)."""
    shipped = Path(str(resources.files("interp") / "data" / "case_studies"))
    dirs = [Path.cwd() / "reports", Path.cwd() / "case_studies" / "results", shipped]
    return _unique(dirs)


def _unique(paths: Iterable[Path]) -> list[Path]:
    seen: dict[Path, None] = {}
    for p in paths:
        seen.setdefault(p.resolve(), None)
    return list(seen)


def dirs_from_env(value: str | None) -> list[Path]:
    """Report folders from ``INTERP_APP_REPORTS`` (``os.pathsep``-separated), else the defaults."""
    if not value:
        return default_dirs()
    return _unique(Path(p).expanduser() for p in value.split(os.pathsep) if p)


def find_reports(dirs: Sequence[Path]) -> list[Report]:
    """Every report folder under ``dirs`` (recursively), sorted by kind then label."""
    found: dict[tuple[str, Path], Report] = {}
    for root in dirs:
        if not root.is_dir():
            continue
        for here, subdirs, names in os.walk(root):
            subdirs[:] = sorted(d for d in subdirs if d not in SKIP_DIRS and not d.startswith("."))
            files = {f for f in names if not f.startswith(".")}
            for kind, marker in MARKERS.items():
                if marker in files:
                    folder = Path(here).resolve()
                    label = str(folder.relative_to(root.resolve())) if folder != root.resolve() else folder.name
                    found.setdefault((kind, folder), Report(kind, folder, f"{label}  ({root.name}/)"))
    return sorted(found.values(), key=lambda r: (r.kind, r.label))


# -- readers ---------------------------------------------------------------------------------------
def _json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ReportError(f"no {path.name} in {path.parent}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ReportError(f"cannot read {path}: {exc}") from None
    if not isinstance(data, dict):
        raise ReportError(f"{path} should hold a JSON object, not {type(data).__name__}")
    return data


def _need(what: str, data: dict[str, Any], keys: Sequence[str]) -> None:
    missing = [k for k in keys if k not in data]
    if missing:
        raise ReportError(f"{what} lacks {', '.join(map(repr, missing))} (expected keys: {', '.join(keys)})")


def _rows(what: str, rows: Any, keys: Sequence[str]) -> pd.DataFrame:
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise ReportError(f"{what} should be a list of objects with keys {', '.join(keys)}")
    for i, r in enumerate(rows):
        _need(f"{what}[{i}]", r, keys)
    return pd.DataFrame(rows, columns=list(dict.fromkeys([*keys, *(k for r in rows for k in r)])))


def read_head_scores(folder: Path):
    """The ``HeadScores`` of a saved head-scan report."""
    from interp.heads import HeadScores

    _json(folder / MARKERS["heads"])  # a clear message for a missing or broken file first
    try:
        return HeadScores.load(folder)
    except (KeyError, TypeError, ValueError) as exc:
        raise ReportError(f"{folder / MARKERS['heads']} is not a head-score report: {exc!r}") from None


def read_neurons(folder: Path) -> pd.DataFrame:
    """``neurons.parquet`` (``interp neurons --out``): layer, neuron, rank, token, prob per row."""
    path = folder / MARKERS["neurons"]
    try:
        df = pd.read_parquet(path)
    except FileNotFoundError:
        raise ReportError(f"no {path.name} in {folder}") from None
    except Exception as exc:  # pyarrow raises its own types for damaged files
        raise ReportError(f"cannot read {path}: {exc}") from None
    from interp.neurons.decoding import COLUMNS

    needed = [c for c in COLUMNS if c != "token_id"]
    missing = [c for c in needed if c not in df.columns]
    if missing:
        raise ReportError(f"{path} lacks columns {missing} (expected {', '.join(needed)})")
    return df


@dataclass
class KnobReport:
    """``knob.json`` as tables, plus where the direction lives."""

    data: dict[str, Any]
    sweep: pd.DataFrame
    patching: pd.DataFrame
    items: pd.DataFrame
    direction_path: Path

    @property
    def site(self) -> str:
        return f"blocks.{int(self.data['layer'])}.hook_resid_post"


def read_knob(folder: Path) -> KnobReport:
    """``knob.json`` checked against the schema the knob page uses."""
    path = folder / MARKERS["knob"]
    data = _json(path)
    from interp.probes.knob_report import ITEM_KEYS, KEYS, PATCHING_KEYS, SWEEP_KEYS

    _need(str(path), data, KEYS)
    _need(f"{path}: accuracy", data["accuracy"], ("prior", "context"))
    if not isinstance(data["layer"], int):
        raise ReportError(f"{path}: 'layer' should be an integer, got {data['layer']!r}")
    sweep = _rows(f"{path}: sweep", data["sweep"], SWEEP_KEYS)
    bad = sorted(set(sweep["method"]) - {"das", "diff_means", "random"})
    if bad:
        raise ReportError(f"{path}: unknown sweep methods {bad}; valid methods: das, diff_means, random")
    return KnobReport(
        data=data, sweep=sweep, patching=_rows(f"{path}: patching", data["patching"], PATCHING_KEYS),
        items=_rows(f"{path}: items", data["items"], ITEM_KEYS), direction_path=folder / "direction.safetensors",
    )


def direction_names(path: Path) -> list[str]:
    """Tensors in ``direction.safetensors``, ``direction`` (the knob's own) first."""
    from safetensors import safe_open

    if not path.is_file():
        raise ReportError(f"no {path.name} in {path.parent}: the knob needs the direction to steer")
    with safe_open(str(path), "pt") as f:
        names = list(f.keys())
    return sorted(names, key=lambda n: (n != "direction", n))


def read_direction(path: Path, d_model: int | None = None, name: str = "direction"):
    """A unit direction from ``direction.safetensors`` (checked against ``d_model``)."""
    from safetensors.torch import load_file

    if not path.is_file():
        raise ReportError(f"no {path.name} in {path.parent}: the knob needs the direction to steer")
    tensors = load_file(str(path))
    if name not in tensors:
        raise ReportError(f"{path} holds {sorted(tensors)} but no tensor named {name!r}")
    u = tensors[name].float().flatten()
    if d_model is not None and u.numel() != d_model:
        raise ReportError(f"{path}: direction has {u.numel()} entries but the model's d_model is {d_model}")
    return u / u.norm()


@dataclass
class CircuitsReport:
    """``icl.json`` as one table per step, plus ``patching.parquet`` when present."""

    data: dict[str, Any]
    tables: dict[str, pd.DataFrame]
    patching: pd.DataFrame | None

    def result(self):
        """The report as the ``ICLResult`` that wrote it (whose figures the page draws)."""
        from interp.circuits.report import ICLResult

        shape = self.data.get("shape") or {}
        return ICLResult(str(self.data["model"]), self.tables, settings=self.data.get("settings"),
                         n_layers=int(shape.get("layers") or 0), n_heads=int(shape.get("heads") or 0),
                         versions=self.data.get("versions"), patching=self.patching)


def read_circuits(folder: Path) -> CircuitsReport:
    """``icl.json`` (and ``patching.parquet`` if present) checked against the circuits schema."""
    from interp.circuits.patching import COLUMNS as PATCHING
    from interp.circuits.report import TABLES

    path = folder / MARKERS["circuits"]
    data = _json(path)
    _need(str(path), data, ("model", *TABLES))
    tables = {name: _rows(f"{path}: {name}", data[name], keys) for name, keys in TABLES.items()}
    patching = None
    ppath = folder / "patching.parquet"
    if ppath.exists():
        try:
            patching = pd.read_parquet(ppath)
        except Exception as exc:  # pyarrow raises its own types for damaged files
            raise ReportError(f"cannot read {ppath}: {exc}") from None
        needed = [c for c in PATCHING if c != "metric"]  # a patching table's columns; the page draws all but one
        missing = [c for c in needed if c not in patching.columns]
        if missing:
            raise ReportError(f"{ppath} lacks columns {missing} (expected {', '.join(needed)})")
    return CircuitsReport(data, tables, patching)
