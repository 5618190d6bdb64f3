"""A head scan as units of work, each result stored once and the report merged from the store.

Stage 1 has one unit per batch of pattern sequences (``random-25-0``, ``text-512-0``: protocol,
length, first sequence) and one per batch of needle tests decoded together
(``retrieval-1000-0-0.0-9``: length, first test's needle and depth, tests); stage 2 has one unit per causal check (``check-induction_ablation``,
``check-retrieval_masking``), which needs the merged stage-1 scores. ``scan`` runs the units in
this process; ``interp.heads.sweep`` runs the same units of many models in this process or on a
Ray cluster. Either way every result goes to the scan's store (a ``Checkpoint``) as it finishes,
a rerun skips what is there, and the report is merged from the store alone, in unit order, so it
does not depend on where or in what order the units ran.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from interp.heads import scores as S
from interp.heads.checkpoint import Checkpoint
from interp.heads.names import OUTPUT_ORDER
from interp.heads.table import HeadScores
from interp.model import Model


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
        from interp.heads.causal import check_names
        from interp.heads.head_scan import pattern_units

        if stage == 1:
            return ["-".join(map(str, u)) for u in pattern_units(self.plan.settings, self.plan.names)] + list(self._groups)
        return [f"check-{name}" for name in check_names(self.scores())] if self.causal_checks else []

    def missing(self, stage: int) -> list[str]:
        return [key for key in self.keys(stage) if not self.done(key)]

    def done(self, key: str) -> bool:
        return (self.store.get_json(key) if key.startswith("check-") else self.store.get(key)) is not None

    def run(self, model: Model, key: str, table: HeadScores | None = None, progress: bool = False) -> Any:
        """Compute one unit on ``model`` (the same model the plan was made for)."""
        from interp.heads.head_scan import score_pattern_unit
        from interp.heads.retrieval import score_tests

        if key.startswith("check-"):
            from interp.heads.causal import run_check

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
        from interp.heads.head_scan import pattern_units
        from interp.heads.retrieval import merge_tests, split_group

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
    from interp.heads.retrieval import test_groups

    return test_groups(tests)


def _group_key(group: Any) -> str:
    from interp.heads.retrieval import group_key

    return group_key(group)
