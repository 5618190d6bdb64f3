"""Causal evidence for head labels: ablate the top heads, compare with random heads."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from interp import interventions as iv
from interp.heads.sequences import repeated_random
from interp.heads.table import HeadScores
from interp.model import Model


def second_copy_loss(model: Model, ids: torch.Tensor, length: int, interventions: dict | None = None) -> float:
    """Mean next-token loss (nats) on the second copy of repeated sequences, its first token excluded."""
    logits = model.run(ids, interventions=interventions).float()
    start = ids.shape[1] - length + 1  # the first token of the copy follows nothing predictable
    pred = logits[:, start - 1 : -1]
    target = ids[:, start:].to(pred.device)
    return float(torch.nn.functional.cross_entropy(pred.reshape(-1, pred.shape[-1]), target.reshape(-1)))


def mean_z(model: Model, ids: torch.Tensor, layers: set[int]) -> dict[int, torch.Tensor]:
    """Each layer's per-head mixed values averaged over batch and positions: ``[heads, d_head]``."""
    sites = [f"blocks.{layer}.attn.hook_z" for layer in sorted(layers)]
    with model.trace(ids, sites=sites, reduce={s: lambda z: z.mean(dim=(0, 1)).cpu() for s in sites}) as tr:
        pass
    return {layer: tr[f"blocks.{layer}.attn.hook_z"] for layer in layers}


def ablate_heads(heads: list[tuple[int, int]], means: dict[int, torch.Tensor]) -> dict[str, Any]:
    """Mean-ablation interventions for (layer, head) pairs."""
    by_layer: dict[int, list[int]] = {}
    for layer, head in heads:
        by_layer.setdefault(layer, []).append(head)
    return {f"blocks.{layer}.attn.hook_z": iv.mean_ablate(means[layer], heads=hs) for layer, hs in by_layer.items()}


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
    means = mean_z(model, ids, layers)
    clean = second_copy_loss(model, ids, length)
    ablated_top = second_copy_loss(model, ids, length, ablate_heads(top, means))
    ablated_random = {s: second_copy_loss(model, ids, length, ablate_heads(h, means)) for s, h in randoms.items()}
    return {
        "k": k, "length": length, "samples": samples, "seed": seed,
        "clean_loss": clean,
        "top_heads": [f"{layer}.{h}" for layer, h in top],
        "top_ablated_loss": ablated_top,
        "random_ablated_loss": {str(s): v for s, v in ablated_random.items()},
        "random_heads": {str(s): [f"{layer}.{h}" for layer, h in hs] for s, hs in randoms.items()},
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
        from interp.heads.retrieval import masking_check

        return masking_check(model, table, settings["retrieval"], progress=progress)
    raise ValueError(f"unknown check {name!r}")


def run_checks(model: Model, table: HeadScores, settings: dict[str, Any], *, checkpoint=None,
               progress: bool = True) -> dict[str, Any]:
    """The causal checks that apply to the scores in ``table``."""
    return {name: run_check(model, name, table, settings, progress=progress) for name in check_names(table)}
