"""A head scan as units of work, each result stored once and the report merged from the store.

Stage 1 has one unit per batch of pattern sequences (``random-25-0``, ``text-512-0``: protocol,
length, first sequence) and one per batch of needle tests decoded together
(``retrieval-1000-0-0.0-9``: length, first test's needle and depth, tests); stage 2 has one unit per causal check (``check-induction_ablation``,
``check-retrieval_masking``), which needs the merged stage-1 scores. ``scan`` runs the units in
this process; ``interp.heads.sweep`` runs the same units of many models in this process or on a
Ray cluster. Either way every result goes to the scan's store (a ``Checkpoint``) as it finishes,
a rerun skips what is there, and the report is merged from the store alone, in unit order, so it
does not depend on where or in what order the units ran.

The pattern units are defined and scored here (``pattern_units``, ``score_pattern_unit``); the
needle units in ``interp.heads.retrieval`` and the checks in ``interp.heads.causal``; the settings
they read are checked by ``interp.heads.head_scan.plan_scan``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from interp.core.model import Model
from interp.heads import scores as S
from interp.heads.causal import check_names, run_check
from interp.heads.checkpoint import Checkpoint
from interp.heads.kernel_stats import head_stats
from interp.heads.retrieval import group_key, merge_tests, score_tests, split_group, test_groups
from interp.heads.sequences import bos_id, natural_text, repeated_random
from interp.heads.settings import NGRAM_ORDERS, OUTPUT_ORDER, RANDOM_SCORES, TEXT_SCORES
from interp.heads.table import HeadScores


def pattern_units(settings: dict[str, Any], names: list[str]) -> list[tuple[str, int, int]]:
    """(protocol, length, batch start) for every batch of work."""
    units = []
    if any(n in names for n in RANDOM_SCORES):
        for length in settings["lengths"]:
            units += [("random", length, s) for s in range(0, settings["samples"], settings["batch_size"])]
    if any(n in names for n in TEXT_SCORES):
        units += [("text", settings["text_tokens"], s) for s in range(0, settings["text_samples"], settings["batch_size"])]
    if "streaming" in names:
        cfg = settings["streaming"]
        units += [("streaming", cfg["tokens"], s) for s in range(0, cfg["samples"], settings["batch_size"])]
    return units


def streaming_unit(model: Model, length: int, start: int, cfg: dict[str, int], seed: int,
                   batch_size: int) -> dict[str, torch.Tensor]:
    """The ``streaming`` score's parts on natural-text windows of ``length`` tokens (a BOS first
    where the model has one, as a prompt starts): each head's attention mass on its first ``sink``
    keys plus its last ``window`` keys, over the rows that see other keys too (two kernel spans
    per row), so a head that lives on a sink + window cache scores 1 and one that reads far back
    scores near 0."""
    sink, window = cfg["sink"], cfg["window"]
    bos = bos_id(model)
    body = natural_text(model, length - (bos is not None), cfg["samples"], seed)[start : start + batch_size]
    ids = body if bos is None else torch.cat([torch.full((len(body), 1), bos), body], dim=1)
    rows = torch.arange(sink + window, length)
    sinks = torch.stack([torch.zeros_like(rows), torch.full_like(rows, sink)], dim=-1)
    recent = torch.stack([rows - window + 1, rows + 1], dim=-1)  # disjoint from the sinks: rows >= sink + window
    spans = [s.expand(len(ids), -1, -1) for s in (sinks, recent) if sink > 0 or s is recent]
    stats = head_stats(model, ids, rules=["span"], rows=rows, spans=spans)
    parts = []
    for layer in range(model.cfg.n_layers):
        kept = stats[layer].mass["span"].double().clamp(max=1)  # [b, H, R]
        n = torch.full((kept.shape[1],), float(kept.shape[0] * kept.shape[2]), dtype=torch.float64)
        parts.append(torch.stack([kept.sum(dim=(0, 2)), n, n]))
    return {"streaming": torch.stack(parts, dim=1)}


def score_pattern_unit(model: Model, unit: tuple[str, int, int], names: list[str], settings: dict[str, Any]) -> dict[str, torch.Tensor]:
    protocol, length, start = unit
    if protocol == "streaming":
        return streaming_unit(model, length, start, settings["streaming"], settings["seed"], settings["batch_size"])
    end = start + settings["batch_size"]
    excl = {"exclude_bos": settings["exclude_bos"], "exclude_current": settings["exclude_current"]}
    exclude = [k for k, on in (("bos", settings["exclude_bos"]), ("self", settings["exclude_current"])) if on]
    wanted: list[str]
    if protocol == "random":
        ids = repeated_random(model, length, settings["samples"], settings["seed"] + length)[start:end]
        wanted = [n for n in ("prev_token", "duplicate", "induction") if n in names]
    else:
        ids = natural_text(model, length, settings["text_samples"], settings["seed"])[start:end]
        wanted = [n.removesuffix("_text") for n in TEXT_SCORES if n in names]
    rules = sorted({r for n in wanted for r in S.RULES_OF.get(n, [])} | {"bos", "self"}
                   | ({f"ngram{k}" for k in NGRAM_ORDERS} if "ngram" in wanted else set()))
    stats = head_stats(model, ids, rules=rules, exclude=exclude)
    b, pos = ids.shape
    all_rows = torch.ones(b, pos, dtype=torch.bool)
    second_copy = all_rows.clone()
    if protocol == "random":
        second_copy[:, : pos - length] = False  # the first copy (and BOS) predict nothing in context
    out: dict[str, list[torch.Tensor]] = {}
    suffix = "" if protocol == "random" else "_text"
    for layer in range(model.cfg.n_layers):
        st = stats[layer]
        parts: dict[str, torch.Tensor] = {}
        if "prev_token" in wanted:
            parts["prev_token" + suffix] = S.previous_token(st, all_rows, **excl)
        if "duplicate" in wanted:
            parts["duplicate" + suffix] = S.duplicate_token(st, second_copy if protocol == "random" else all_rows, **excl)
        if "induction" in wanted:
            parts["induction" + suffix] = S.induction(st, second_copy if protocol == "random" else all_rows, **excl)
        if "ngram" in wanted:
            for n in NGRAM_ORDERS:
                parts[f"ngram{n}"] = S.ngram(st, all_rows, n, **excl)
        for name, value in parts.items():
            out.setdefault(name, []).append(value)
    return {name: torch.stack(v, dim=1) for name, v in out.items()}  # [3, layers, heads]


class ScanUnits:
    """The units of one model's scan (``plan``: a checked ``ScanPlan``) and its ``store``."""

    def __init__(self, model: str, shape: tuple[int, int], plan: Any, store: Checkpoint, versions: dict[str, str],
                 causal_checks: bool = True):
        self.model, self.shape, self.plan, self.store = model, shape, plan, store
        self.versions, self.causal_checks = versions, causal_checks
        self._groups = {} if plan.needle_tests is None else {_group_key(g): g for g in _groups(plan.needle_tests)}

    # -- the units ----------------------------------------------------------------------------
    def keys(self, stage: int) -> list[str]:
        """Every unit of ``stage`` (1: scores, 2: causal checks, known once stage 1 is merged)."""

        if stage == 1:
            return ["-".join(map(str, u)) for u in pattern_units(self.plan.settings, self.plan.names)] + list(self._groups)
        return [f"check-{name}" for name in check_names(self.scores())] if self.causal_checks else []

    def missing(self, stage: int) -> list[str]:
        return [key for key in self.keys(stage) if not self.done(key)]

    def done(self, key: str) -> bool:
        return (self.store.get_json(key) if key.startswith("check-") else self.store.get(key)) is not None

    def run(self, model: Model, key: str, table: HeadScores | None = None, progress: bool = False) -> Any:
        """Compute one unit on ``model`` (the same model the plan was made for)."""

        if key.startswith("check-"):

            assert table is not None, "a check needs the merged scores"
            return run_check(model, key.removeprefix("check-"), table, self.plan.settings, progress=progress)
        if key in self._groups:
            cfg = self.plan.settings["retrieval"]
            group = self._groups[key]
            # the masking check (a causal check) decodes the shortest tests again: keep their prefills
            keep = self.causal_checks and group[0].length == min(cfg["lengths"])
            return score_tests(model, group, cfg, keep=keep)
        protocol, length, start = key.split("-")
        return score_pattern_unit(model, (protocol, int(length), int(start)), self.plan.names, self.plan.settings)

    def save(self, key: str, result: Any) -> None:
        (self.store.put_json if key.startswith("check-") else self.store.put)(key, result)

    # -- merging, from the store only -----------------------------------------------------------
    def scores(self) -> HeadScores:
        """The stage-1 scores; every stage-1 unit must be in the store."""

        settings = self.plan.settings
        totals: dict[str, torch.Tensor] = {}
        for unit in pattern_units(settings, self.plan.names):
            part = self._get("-".join(map(str, unit)))
            for name, value in part.items():
                totals[name] = totals.get(name, 0) + value.double()
        arrays = {name: S.finish(totals[name]).numpy() for name in OUTPUT_ORDER if name in totals}
        checks: dict[str, Any] = {}
        if self._groups:
            tests = [t for g in self._groups.values() for t in g]
            saved = [part for k, g in self._groups.items() for part in split_group(self._get(k), len(g))]
            result = merge_tests(tests, saved, settings["retrieval"], self.shape)
            arrays["retrieval"] = result.scores
            checks["retrieval_tests"] = result.summary()
        table = HeadScores.from_arrays({k: np.asarray(v) for k, v in arrays.items()}, model=self.model,
                                       settings=settings, versions=self.versions, n_layers=self.shape[0],
                                       n_heads=self.shape[1], **(self.plan.layout or {}))
        table.checks.update(checks)
        return table

    def report(self) -> HeadScores:
        """Scores and causal checks; every unit of both stages must be in the store."""
        table = self.scores()
        for key in self.keys(2):
            value = self.store.get_json(key)
            if value is None:
                raise RuntimeError(f"unit {key} of {self.model} is not in the store")
            table.checks[key.removeprefix("check-")] = value
        return table

    def _get(self, key: str) -> dict[str, torch.Tensor]:
        part = self.store.get(key)
        if part is None:
            raise RuntimeError(f"unit {key} of {self.model} is not in the store")
        return part


def _groups(tests: Any) -> Any:

    return test_groups(tests)


def _group_key(group: Any) -> str:

    return group_key(group)
