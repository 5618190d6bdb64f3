"""Finding and reading the report folders the app shows (JSON, parquet, safetensors; never pickle).

A report is a folder holding one of the marker files below. ``find_reports`` scans folders
recursively, passing over hidden files and folders (a writer's ``.interp-manifest.json`` or
``.interp.lock``, ``.git``); each ``read_*`` reads through ``interp.results.reading`` (the reader
every result's ``load`` uses: types, ranges, shapes and sizes checked before anything is built)
and raises ``ReportError`` naming the file, the field and what would be valid, so a page can
show one clear message (pages show its paths through ``paths.display_text``).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import pandas as pd

from interp.errors import BadReportError, ReportError
from interp.results import reading

# Report kind -> the file that marks a folder as such a report.
MARKERS = {"heads": "head_scores.json", "neurons": "neurons.parquet", "knob": "knob.json", "circuits": "icl.json"}

SKIP_DIRS = {".git", ".venv", "node_modules", "__pycache__"}


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
def _checked(what: str, read: Any, *args: Any, **kwargs: Any) -> Any:
    """``read(*args, **kwargs)`` with a bad file's ``BadReportError`` as a ``ReportError`` (``what``:
    the kind of report, when the message should say it)."""
    try:
        return read(*args, **kwargs)
    except ReportError:
        raise
    except BadReportError as exc:
        raise ReportError(f"{what}: {exc}" if what else str(exc)) from None


def _rows(rows: list[dict[str, Any]], keys: Sequence[str]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=list(dict.fromkeys([*keys, *(k for r in rows for k in r)])))


def read_head_scores(folder: Path):
    """The ``HeadScores`` of a saved head-scan report (``HeadScores.load``: every field checked)."""
    from interp.heads import HeadScores

    return _checked("not a head-score report", HeadScores.load, folder)


def read_neurons(folder: Path) -> pd.DataFrame:
    """``neurons.parquet`` (``interp neurons --out``): layer, neuron, rank, token, prob per row."""
    return _checked("", reading.neurons_table, folder / MARKERS["neurons"], token_ids=False)


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
    """``knob.json`` checked against the schema the knob page uses (``interp.results.reading.knob``)."""
    data = _checked("", reading.knob, folder, full=False)
    return KnobReport(
        data=data, sweep=_rows(data["sweep"], reading.KNOB_SWEEP_KEYS), patching=_rows(data["patching"], reading.KNOB_PATCHING_KEYS),
        items=_rows(data["items"], reading.KNOB_ITEM_KEYS), direction_path=folder / reading.DIRECTIONS,
    )


def direction_names(path: Path) -> list[str]:
    """Tensors in ``direction.safetensors``, ``direction`` (the knob's own) first."""
    from safetensors import safe_open

    if not path.is_file():
        raise ReportError(f"no {path.name} in {path.parent}: the knob needs the direction to steer")
    try:
        with safe_open(str(path), "pt") as f:
            names = list(f.keys())
    except Exception as exc:  # safetensors raises its own types for damaged files
        raise ReportError(f"cannot read {path}: {exc}") from None
    return sorted(names, key=lambda n: (n != "direction", n))


def read_direction(path: Path, d_model: int | None = None, name: str = "direction"):
    """A unit direction from ``direction.safetensors`` (checked against ``d_model``)."""
    tensors = _checked("", reading.directions, path, [name])
    if name not in tensors:
        raise ReportError(f"{path} holds {direction_names(path)} but no tensor named {name!r}")
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

        d = self.data
        return ICLResult(d["model"], self.tables, settings=d["settings"], n_layers=d["n_layers"], n_heads=d["n_heads"],
                         versions=d["versions"], patching=self.patching)


def read_circuits(folder: Path) -> CircuitsReport:
    """``icl.json`` (and ``patching.parquet`` if present) checked against the circuits schema."""

    data = _checked("", reading.icl, folder, every_table=True)
    tables = {name: _rows(data["tables"][name], keys) for name, keys in reading.ICL_TABLES.items()}
    about = data["patching_summary"]
    return CircuitsReport({**data, "patching": None if about is None else {"datasets": about}}, tables, data["patching"])
