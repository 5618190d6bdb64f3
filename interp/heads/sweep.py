"""Head scans of many models as one sweep: the same units in this process or on a Ray cluster.

Each model's scan is a set of units (``interp.heads.units``): stage 1, its pattern batches and
needle tests; stage 2, its causal checks, which need the merged stage-1 scores. In this process
the models run one after another, their units in order. With Ray every model gets a worker (an
actor that loads the model once, from the same verified cache, and runs all of that model's
units; one CPU each, or one GPU with ``device="cuda"``); the driver hands out the units still
missing from the store, writes each result to the store the moment it returns, and merges the
reports from the store alone, so they do not depend on where or in what order units ran. A
worker lost mid-unit costs that unit only (Ray restarts the worker and retries it); a sweep
stopped altogether resumes from the store when the same command is run again.

The store needs no shared file system: workers return results and only the driver writes.

>>> reports = run_sweep(plan_sweep(["smollm2-135m"], ["induction"], {}, load, stores))   # doctest: +SKIP
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from interp import logs
from interp.core.model import Model
from interp.errors import InterpError, MissingDependencyError
from interp.heads.checkpoint import Checkpoint, fingerprint
from interp.heads.head_scan import plan_scan
from interp.heads.table import HeadScores
from interp.heads.units import ScanUnits
from interp.results.atomic import file_sha256
from interp.results.folders import OutputFolder
from interp.results.protocol import write_table
from interp.results.versions import versions

EXECUTIONS = "INTERP_UNIT_LOG"  # a file that, when set, records every unit a worker finishes


@dataclass
class SweepModel:
    """One model of a sweep: how to load it, where its report goes, its units."""

    spec: str
    name: str
    folder: str  # its report's subfolder of the output ("" for a single model)
    units: ScanUnits
    revision: str
    n_kv_heads: int
    model: Model | None = None  # kept from planning when the sweep has one model, so it loads once


def revision(model: Model) -> str:
    """What identifies the weights: a bundled package's version, a hub revision, or a sha256 of
    a local model's weight files (the first 16 hex digits)."""
    source = str(model.source or "")
    commit = getattr(model.hf.config, "_commit_hash", None)
    if commit:
        return f"revision {commit}"
    path = Path(source)
    if source and path.exists():
        files = sorted(path.glob("*.safetensors")) + sorted(path.glob("*.bin")) if path.is_dir() else [path]
        return f"sha256 {file_sha256(*files)[:16]}"
    return source or "unknown"


def plan_sweep(specs: Sequence[str], names: Sequence[str], settings: dict[str, Any], load: Callable[[str], Model],
               stores: Callable[[str], str | Path], folders: Callable[[Model], str] = lambda m: "") -> list[SweepModel]:
    """Load each model once to check every setting and build its units (``plan_scan``); a
    model's store is the folder ``stores(folder)``. Raises before any unit runs."""

    planned: list[tuple[str, Any, str, Any, dict[str, Any]]] = []
    for spec in specs:
        model = load(spec)
        plan = plan_scan(model, names, **settings)
        folder = folders(model)
        if any(folder == f for _, _, f, _, _ in planned):
            raise InterpError(f"two of the models would write to the same folder {folder!r}: {', '.join(specs)}")
        stamp = fingerprint(model, {"model": model.name, **plan.settings})
        planned.append((spec, model if len(specs) == 1 else _Shape(model), folder, plan, stamp))
        del model
    out: list[SweepModel] = []
    for spec, model, folder, plan, stamp in planned:  # stores are made only once every model passed its checks
        store = Checkpoint(stores(folder), stamp)
        units = ScanUnits(model.name, (model.cfg.n_layers, model.cfg.n_heads), plan, store, versions(),
                          settings.get("causal_checks", True))
        kept = model if isinstance(model, Model) else None
        rev = revision(kept) if kept is not None else model.revision
        out.append(SweepModel(spec, model.name, folder, units, rev, model.cfg.n_kv_heads, kept))
    return out


class _Shape:
    """What a sweep keeps of a model it does not hold in memory."""

    def __init__(self, model: Model):
        self.name, self.cfg, self.revision = model.name, model.cfg, revision(model)


def _log(model: str, key: str) -> None:
    path = os.environ.get(EXECUTIONS)
    if path:
        with open(path, "a") as f:
            f.write(f"{model}\t{key}\t{os.getpid()}\n")


def _execute(model: Model, units: ScanUnits, key: str, table: HeadScores | None, progress: bool = False) -> Any:
    result = units.run(model, key, table, progress=progress)
    _log(units.model, key)
    return result


def run_sweep(models: list[SweepModel], load: Callable[[str], Model], *, ray: str | None = None,
              load_options: dict[str, Any] | None = None, progress: bool = True,
              on_report: Callable[[SweepModel, HeadScores], None] | None = None) -> list[HeadScores]:
    """Every missing unit of every model, then each model's report (merged from its store);
    ``on_report`` is called with each report as soon as it is complete. ``ray``: ``None`` runs
    in this process; ``"auto"`` starts a local Ray cluster for the sweep; an address joins one."""
    if ray is not None:
        return _run_on_ray(models, ray, load_options or {}, progress, on_report)
    reports = []
    for m in models:
        report = _run_here(m, load, progress)
        if on_report is not None:
            on_report(m, report)
        reports.append(report)
    return reports


def _run_here(m: SweepModel, load: Callable[[str], Model], progress: bool) -> HeadScores:
    """One model's missing units in this process (loaded only if a unit is missing), then its report."""
    model = m.model
    todo = m.units.missing(1)
    for key in logs.progress(todo, f"{m.name}: head scan", progress and bool(todo)):
        model = model or load(m.spec)
        m.units.save(key, _execute(model, m.units, key, None))
    if m.units.causal_checks:
        table = m.units.scores()
        for key in m.units.missing(2):
            model = model or load(m.spec)
            m.units.save(key, _execute(model, m.units, key, table, progress))
    m.model = None  # the next model may need the memory
    return m.units.report()


# -- Ray -----------------------------------------------------------------------------------------------
def require_ray() -> Any:
    try:
        import ray
    except ImportError as exc:
        raise MissingDependencyError("ray", "interp heads --ray", "pip install 'interp[ray]'") from exc
    return ray


def connect(address: str) -> Any:
    """Start (``auto``: a local cluster for this sweep, on the loopback address) or join a Ray
    cluster; a clear error at once if the address is malformed or nothing answers there."""
    ray = require_ray()
    if address != "auto":
        check_address(address)
    try:
        if address == "auto":
            ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False,
                     _node_ip_address="127.0.0.1")
        else:
            ray.init(address=address, log_to_driver=False, configure_logging=False)
    except (ConnectionError, RuntimeError, ValueError, TimeoutError) as exc:
        raise InterpError(f"cannot reach the Ray cluster at {address!r}: {str(exc).splitlines()[0]}") from None
    return ray


def check_address(address: str) -> None:
    import socket

    hostport = address.removeprefix("ray://")
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise InterpError(f"--ray {address!r} is not an address: give HOST:PORT of a running cluster (ray start "
                          "--head prints it) or auto for a local one")
    try:
        with socket.create_connection((host, int(port)), timeout=5):
            pass
    except OSError as exc:
        raise InterpError(f"cannot reach the Ray cluster at {address!r} ({exc.strerror or exc}); give the address of "
                          "a running cluster (ray start --head prints it) or auto for a local one") from None


class _Worker:
    """Holds one loaded model and runs its units (a Ray actor)."""

    def __init__(self, spec: str, load_options: dict[str, Any], units: ScanUnits):
        import torch

        import interp

        torch.set_num_threads(max(1, int(os.environ.get("OMP_NUM_THREADS", "1"))))
        self.model = interp.load(spec, **load_options)
        self.units = units

    def run(self, key: str, table: HeadScores | None) -> Any:
        return _execute(self.model, self.units, key, table)

    def pid(self) -> int:
        return os.getpid()


def _run_on_ray(models: list[SweepModel], address: str, load_options: dict[str, Any], progress: bool,
                on_report: Callable[[SweepModel, HeadScores], None] | None) -> list[HeadScores]:
    ray = connect(address)
    try:
        gpu = str(load_options.get("device", "cpu")).startswith("cuda")
        resources = {"num_gpus": 1} if gpu else {"num_cpus": 1}
        Worker = ray.remote(max_restarts=3, max_task_retries=3, **resources)(_Worker)
        workers = {m.name: Worker.remote(m.spec, load_options, m.units) for m in models}
        stage1 = {m.name: m.units.missing(1) for m in models}
        _gather(ray, models, workers, {name: [(k, None) for k in keys] for name, keys in stage1.items()}, progress,
                "head scan")
        tables = {m.name: m.units.scores() for m in models if m.units.causal_checks}
        stage2 = {m.name: [(k, tables[m.name]) for k in m.units.missing(2)] for m in models if m.units.causal_checks}
        _gather(ray, models, workers, stage2, progress, "causal checks")
        reports = []
        for m in models:
            report = m.units.report()
            if on_report is not None:
                on_report(m, report)
            reports.append(report)
        return reports
    finally:
        if address == "auto":
            ray.shutdown()


def _gather(ray: Any, models: list[SweepModel], workers: dict[str, Any], todo: dict[str, list[tuple[str, Any]]],
            progress: bool, what: str) -> None:
    by_name = {m.name: m for m in models}
    pending = {workers[name].run.remote(key, table): (name, key) for name, items in todo.items() for key, table in items}
    bar = logs.progress(total=len(pending), desc=what, enabled=progress and bool(pending))
    while pending:
        done, _ = ray.wait(list(pending), num_returns=1)
        name, key = pending.pop(done[0])
        by_name[name].units.save(key, ray.get(done[0]))  # written the moment it returns
        bar.update()
    bar.close()


# -- one results table across models ------------------------------------------------------------------
def heads_table(models: list[SweepModel], reports: list[HeadScores]) -> Any:
    """Every model's scores in one tidy table: model, revision, layer, head, kv_head, score, value."""
    import pandas as pd

    parts = []
    for m, r in zip(models, reports, strict=True):
        group = r.n_heads // m.n_kv_heads
        df = r.df.assign(model=m.name, revision=m.revision, kv_head=r.df["head"] // group)
        parts.append(df[["model", "revision", "layer", "head", "kv_head", "score", "value"]])
    return pd.concat(parts, ignore_index=True)


def write_heads_table(out: OutputFolder, models: list[SweepModel], reports: list[HeadScores]) -> Path:
    """``heads.parquet``: ``heads_table``, with each model's settings and the versions as metadata
    (``interp.settings``, ``interp.results.versions``; written by ``interp.results.protocol.write_table``)."""

    return write_table(out, "heads.parquet", heads_table(models, reports),
                       metadata={"settings": {m.name: r.settings for m, r in zip(models, reports, strict=True)},
                                 "versions": reports[0].versions if reports else {}})
