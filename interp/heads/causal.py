"""Causal evidence for head labels: ablate the top heads, compare with random heads."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from interp import logs
from interp.core import interventions as iv
from interp.core.model import Model
from interp.errors import UnknownNameError
from interp.heads import retrieval as R
from interp.heads.sequences import repeated_random
from interp.heads.table import HeadScores


def second_copy_loss(model: Model, ids: torch.Tensor, length: int, interventions: dict | None = None,
                     logits: torch.Tensor | None = None) -> float:
    """Mean next-token loss (nats) on the second copy of repeated sequences, its first token
    excluded; ``logits``: of a run of ``ids`` already made (no forward then)."""
    logits = (model.run(ids, interventions=interventions) if logits is None else logits).float()
    start = ids.shape[1] - length + 1  # the first token of the copy follows nothing predictable
    pred = logits[:, start - 1 : -1]
    target = ids[:, start:].to(pred.device)
    return float(torch.nn.functional.cross_entropy(pred.reshape(-1, pred.shape[-1]), target.reshape(-1)))


def mean_z(model: Model, ids: torch.Tensor, layers: set[int]) -> tuple[dict[int, torch.Tensor], torch.Tensor]:
    """Each layer's per-head mixed values averaged over batch and positions (``[heads, d_head]``),
    and the logits of that clean run (the check's clean loss comes from them: one forward, not two)."""
    sites = [f"blocks.{layer}.attn.hook_z" for layer in sorted(layers)]
    with model.trace(ids, sites=sites, reduce={s: lambda z: z.mean(dim=(0, 1)).cpu() for s in sites}) as tr:
        pass
    assert tr.logits is not None
    return {layer: tr[f"blocks.{layer}.attn.hook_z"] for layer in layers}, tr.logits


def mean_ablation(heads: list[tuple[int, int]], means: dict[int, torch.Tensor]) -> dict[str, Any]:
    """Mean-ablation interventions for (layer, head) pairs."""
    by_layer: dict[int, list[int]] = {}
    for layer, head in heads:
        by_layer.setdefault(layer, []).append(head)
    return {f"blocks.{layer}.attn.hook_z": iv.mean_ablate(means[layer], heads=hs) for layer, hs in by_layer.items()}


def head_records(heads: list[tuple[int, int]]) -> list[dict[str, int]]:
    """Heads as a report lists them: ``[{"layer": 1, "head": 0}, ...]`` (``L1H0`` is for display only)."""
    return [{"layer": int(layer), "head": int(h)} for layer, h in heads]


def random_heads(model: Model, k: int, exclude: list[tuple[int, int]], seed: int) -> list[tuple[int, int]]:
    pool = [(layer, h) for layer in range(model.cfg.n_layers) for h in range(model.cfg.n_heads) if (layer, h) not in exclude]
    rng = np.random.default_rng(seed)
    return [pool[i] for i in rng.choice(len(pool), size=k, replace=False)]


def induction_ablation(model: Model, table: HeadScores, *, k: int = 10, length: int = 50, samples: int = 8,
                       seed: int = 1000, random_seeds: tuple[int, ...] = (0, 1, 2)) -> dict[str, Any]:
    """Mean-ablate the ``k`` top induction heads and ``k`` random others; loss on the second copy.

    The means come from the same held-out sequences (seeded apart from the scan's).
    """
    ids = repeated_random(model, length, samples, seed)
    top = [(int(r.layer), int(r.head)) for r in table.top("induction", k).itertuples()]
    randoms = {s: random_heads(model, k, top, s) for s in random_seeds}
    layers = {layer for layer, _ in top} | {layer for hs in randoms.values() for layer, _ in hs}
    means, clean_logits = mean_z(model, ids, layers)
    clean = second_copy_loss(model, ids, length, logits=clean_logits)
    ablated_top = second_copy_loss(model, ids, length, mean_ablation(top, means))
    ablated_random = {s: second_copy_loss(model, ids, length, mean_ablation(h, means)) for s, h in randoms.items()}
    return {
        "k": k, "length": length, "samples": samples, "seed": seed,
        "clean_loss": clean,
        "top_heads": head_records(top),
        "top_ablated_loss": ablated_top,
        "random_ablated_loss": {str(s): v for s, v in ablated_random.items()},
        "random_heads": {str(s): head_records(hs) for s, hs in randoms.items()},
        "loss_increase_top": ablated_top - clean,
        "loss_increase_random_mean": float(np.mean(list(ablated_random.values()))) - clean,
    }


def check_names(table: HeadScores) -> list[str]:
    """The causal checks that apply to the scores in ``table``, in the order they run."""
    return [name for name, score in (("induction_ablation", "induction"), ("retrieval_masking", "retrieval"))
            if score in table.scores]


def run_check(model: Model, name: str, table: HeadScores, settings: dict[str, Any], *,
              progress: bool = True) -> dict[str, Any]:
    """One causal check (``check_names``) of the scores in ``table``."""
    if name == "induction_ablation":
        k = max(1, min(10, model.cfg.n_total_heads // 10))
        return induction_ablation(model, table, k=k, length=max(settings["lengths"]), samples=settings["samples"])
    if name == "retrieval_masking":
        return masking_check(model, table, settings["retrieval"], progress=progress)
    raise UnknownNameError("causal check", name, ["induction_ablation", "retrieval_masking"])


# -- the retrieval masking check (Wu et al.) ---------------------------------------------------
def _scored_recalls(table, tests: list[R.NeedleTest]) -> list[float] | None:
    """The unmasked recalls of ``tests`` as the scoring pass measured them (same decoding, no
    intervention), or ``None`` when the table does not hold all of them."""
    rows = {(r["needle"], r["length"], r["depth"]): r["recall"]
            for r in (table.checks.get("retrieval_tests") or {}).get("per_test", [])}
    found = [rows.get((t.needle, t.length, t.depth)) for t in tests]
    return None if any(r is None for r in found) else [float(r) for r in found]  # type: ignore[arg-type]


def masking_pool(n_total_heads: int) -> int:
    """How many heads the random control of the masking check draws from: those outside the
    top ``min(100, n/2)`` (Wu et al. draw outside the top 100)."""
    return n_total_heads - min(100, n_total_heads // 2)


def masking_check(model: Model, table, cfg: dict[str, Any], progress: bool = True) -> dict[str, Any]:
    """Needle recall with the top-k retrieval heads' queries zeroed while decoding, against as
    many random heads drawn outside the top 100 (Wu et al.'s control), and unmasked. Only heads
    above the retrieval threshold are masked (at most ``mask_k``): in a small model the top k
    may include heads that never copy, and masking those would not test retrieval heads. Runs
    on the tests of the shortest haystack length, to bound its cost."""
    try:
        return _masking_check(model, table, cfg, progress)
    finally:
        R.forget_prefills(model)  # the kept prefills serve this check only


def _masking_check(model: Model, table, cfg: dict[str, Any], progress: bool) -> dict[str, Any]:
    k = cfg["mask_k"]
    ranking = table.ranking("retrieval")
    if ranking["value"].isna().all():
        return {"skipped": "no needle test was recalled, so there are no retrieval scores to mask"}
    ranked = [(int(r.layer), int(r.head)) for r in ranking.itertuples()]
    top = [ranked[j] for j in range(k) if ranking["value"][j] > cfg["threshold"]]
    if not top:
        return {"skipped": f"no head scores above the retrieval threshold {cfg['threshold']}"}
    k, top100 = len(top), ranked[: len(ranked) - masking_pool(len(ranked))]
    tests = R.needle_tests(model, {**cfg, "lengths": sorted(cfg["lengths"])[:1]})

    conditions: dict[str, list[tuple[int, int]]] = {"none": [], "top": top}
    randoms = {s: random_heads(model, k, top100, s) for s in cfg["mask_seeds"]}
    for s, heads in randoms.items():
        conditions[f"random_{s}"] = heads
    # Masking acts on decoding steps only, so every condition decodes from one prefill per batch
    # of tests (the scoring pass's own, when it ran in this process): each test's row repeated
    # once per condition, all decoded together; the unmasked condition is the scoring pass's own
    # decoding, where it ran.
    recalls: dict[str, list[float]] = {name: [] for name in conditions}
    scored = _scored_recalls(table, tests)
    if scored is not None:
        recalls["none"] = scored
    todo = [name for name in conditions if not recalls[name]]
    masks = torch.zeros(len(todo), model.cfg.n_layers, model.cfg.n_heads, dtype=torch.bool)
    for r, name in enumerate(todo):
        for layer, h in conditions[name]:
            masks[r, layer, h] = True
    for group in logs.progress(R.test_groups(tests) if todo else [], "retrieval masking", progress):
        tiled = masks.repeat(len(group), 1, 1)  # row t * conditions + c: test t under condition c
        rowwise = {f"blocks.{layer}.attn.hook_q": R.zero_queries_by_row(tiled[:, layer])
                   for layer in range(model.cfg.n_layers) if masks[:, layer].any()}
        rows = R.decode_batch(model, R.take_prefill(model, group).repeat(len(todo)), cfg["max_new_tokens"],
                              interventions=rowwise)
        for i, t in enumerate(group):
            for c, name in enumerate(todo):
                recalls[name].append(R.rouge1_recall(t.answer, model.tokenizer.decode(rows[i * len(todo) + c])))
    recall = {name: float(np.mean(recalls[name])) for name in conditions}
    return {
        "k": k, "mask_k": cfg["mask_k"], "threshold": cfg["threshold"], "tests": len(tests),
        "length": sorted(cfg["lengths"])[0], "top_heads": head_records(top),
        "random_heads": {str(s): head_records(hs) for s, hs in randoms.items()},
        "recall": recall,
    }
