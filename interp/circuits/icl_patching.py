"""Activation patching on ICL prompts: where the query's class travels to the answer.

The pairs (``patching_pairs``) share one set of ``k`` demonstrations, balanced over the labels
and in the same order; only the query differs:

* *clean*: the demonstrations, then a query of class A;
* *corrupted*: the same demonstrations, then a query of class B (B ≠ A) with the same number of
  tokens, so every position lines up (all pairs have one length, so they run as one batch).

The metric is the logit difference ``logit(A) − logit(B)`` of the two labels' first tokens at the
query's forerunner ``s_q`` (the last token), per pair. Patching runs ``denoise``: the corrupted
prompts with one clean activation restored, and the effect is
``(m_patched − m_corr) / (m_clean − m_corr)`` over the pairs' mean logit differences (1: the
patch moves the whole preference back to A; 0: nothing). Two sites (``interp.circuits.activation_patching``):

* ``attn.hook_z`` per layer and head, all positions patched at once (``position = -1``);
* ``hook_resid_pre`` per layer (``head = -1``) and position, from the first position where the
  queries differ to the end: earlier positions hold the same demonstrations in both prompts, and
  under causal attention their activations are equal, so patching them changes nothing.

The rows (``patching.parquet``) are ``dataset, site, layer, head, position, token, effect, metric``;
``token`` is the token at that position when it is the same in every prompt, else ``<query>``.

The demonstrations run once (``shared_prefix``: a key/value cache) and each patched run covers only
the query's tokens, so the cost is about (layers × heads + layers × query tokens) × pairs short
runs: on SmolLM2-135M (30 layers × 9 heads, 11-12 query tokens) 2 pairs took 73 s (sentiment)
and 63 s (topic) on 2 CPU cores, and the time grows with the pairs.

>>> rows, summary = icl_patching(model, load_dataset("sentiment"), label_ids, dataset="sentiment", k=4)  # doctest: +SKIP
"""

from __future__ import annotations

import math
import random
from typing import Any

import pandas as pd
import torch

from interp.circuits.icl_data import ICLDataset, Prompt, make_prompt
from interp.circuits.patching import activation_patching, logit_diff
from interp.core.model import Model
from interp.core.sites import layer_glob

COLUMNS = ["dataset", "site", "layer", "head", "position", "token", "effect", "metric"]
PATCH_SITES = {"z": "blocks.*.attn.hook_z", "resid_pre": "blocks.*.hook_resid_pre"}  # the two sites patched, every layer
QUERY_TOKEN = "<query>"
METRIC = "logit(clean query's label) - logit(corrupted query's label) at s_q"


def balanced_demos(ds: ICLDataset, k: int, rng: random.Random) -> tuple[list[tuple[str, int]], set[int]]:
    """``k`` demonstrations cycling through the labels (shuffled order), and the items they use."""
    by_label: dict[int, list[int]] = {}
    order = list(range(len(ds.items)))
    rng.shuffle(order)
    for i in order:
        by_label.setdefault(ds.items[i][1], []).append(i)
    labels = sorted(by_label)
    chosen = []
    for j in range(k):
        pool = by_label[labels[j % len(labels)]]
        if not pool:
            raise ValueError(f"dataset {ds.name!r} has too few items of label {ds.labels[labels[j % len(labels)]]!r}")
        chosen.append(pool.pop())
    rng.shuffle(chosen)
    return [ds.items[i] for i in chosen], set(chosen)


def patching_pairs(ds: ICLDataset, tokenizer: Any, *, k: int, n: int, seed: int = 0) -> tuple[list[Prompt], list[Prompt]]:
    """Up to ``n`` (clean, corrupted) prompt pairs: shared demonstrations, queries of two classes, one length.

    Every other item is tried as a query; the token length with the most pairs possible is used
    (ties: the shorter). Each pair takes its two labels from the label pairs used least so far
    (then those with the most items left), and the clean side alternates within a label pair, so
    the pairs cover the labels and both directions.
    """
    if n < 1:
        return [], []
    rng = random.Random(seed * 7_919 + 17)
    demos, used = balanced_demos(ds, k, rng)
    by_len: dict[int, dict[int, list[Prompt]]] = {}
    for i, item in enumerate(ds.items):
        if i in used:
            continue
        p = make_prompt(ds, tokenizer, demos, item)
        by_len.setdefault(p.n_tokens, {}).setdefault(p.label, []).append(p)
    if not by_len:
        return [], []

    def feasible(groups: dict[int, list[Prompt]]) -> int:
        total = sum(len(v) for v in groups.values())
        return min(n, total // 2, total - max(len(v) for v in groups.values()))

    length = max(sorted(by_len), key=lambda t: feasible(by_len[t]))
    groups = {lab: list(ps) for lab, ps in sorted(by_len[length].items())}
    for ps in groups.values():
        rng.shuffle(ps)
    times: dict[tuple[int, int], int] = {}
    clean: list[Prompt] = []
    corrupted: list[Prompt] = []
    while len(clean) < n:
        options = [(a, b) for a in groups for b in groups if a < b and groups[a] and groups[b]]
        if not options:
            break
        a, b = min(options, key=lambda ab: (times.get(ab, 0), -len(groups[ab[0]]) - len(groups[ab[1]]), ab))
        pa, pb = groups[a].pop(), groups[b].pop()
        if times.get((a, b), 0) % 2:
            pa, pb = pb, pa
        times[(a, b)] = times.get((a, b), 0) + 1
        clean.append(pa)
        corrupted.append(pb)
    return clean, corrupted


def _num(x: Any) -> float | None:
    """Rounded for icl.json; None where not finite (JSON has no NaN), e.g. effects when both runs agree."""
    v = float(x)
    return round(v, 4) if math.isfinite(v) else None


def _tokens(prompts: list[Prompt], device: Any) -> dict[str, torch.Tensor]:
    ids = torch.tensor([p.ids for p in prompts], device=device)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def icl_patching(model: Model, ds: ICLDataset, label_ids: list[int], *, dataset: str, k: int, n_pairs: int = 2,
                 seed: int = 0, batch_size: int = 8, progress: bool = True) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Patching rows (``COLUMNS``) and a summary for one dataset; no rows when no pair can be built."""
    clean, corrupted = patching_pairs(ds, model.tokenizer, k=k, n=n_pairs, seed=seed)
    if not clean:
        return pd.DataFrame(columns=COLUMNS), {"pairs": 0, "note": "no two queries of different classes with one length"}
    clean_t, corr_t = _tokens(clean, model.device), _tokens(corrupted, model.device)
    ids = [[p.ids[i] for p in clean + corrupted] for i in range(clean[0].n_tokens)]
    first_diff = next(i for i, col in enumerate(ids) if len(set(col)) > 1)
    pieces = model.tokenizer.convert_ids_to_tokens(clean[0].ids)
    token_of = [str(pieces[i]) if len(set(col)) == 1 else QUERY_TOKEN for i, col in enumerate(ids)]
    metric = logit_diff([label_ids[p.label] for p in clean], [label_ids[p.label] for p in corrupted])
    # Only the query's tokens run (the demonstrations come from a cache), so take ~4 × batch_size prompts a pass.
    common: dict[str, Any] = {"metric": metric, "batch_size": max(1, 4 * batch_size // len(clean)), "logits_to_keep": 1,
              "shared_prefix": first_diff, "progress": progress}
    z = activation_patching(model, clean_t, corr_t, sites=PATCH_SITES["z"], positions="all", **common)
    resid = activation_patching(model, clean_t, corr_t, sites=PATCH_SITES["resid_pre"], positions="each", **common)
    df = pd.concat([z.df, resid.df], ignore_index=True)
    df["head"] = df["head"].fillna(-1).astype("int64")
    df["position"] = df["position"].fillna(-1).astype("int64")
    df["token"] = [token_of[p] if p >= 0 else "" for p in df["position"]]
    df["layer"] = df["layer"].astype("int64")
    df.insert(0, "dataset", dataset)
    kind = df["site"].map(layer_glob)
    heads = df[kind == PATCH_SITES["z"]].sort_values("effect", ascending=False, kind="stable").head(5)
    res = df[kind == PATCH_SITES["resid_pre"]]
    peak = res.loc[res["effect"].idxmax()] if len(res) and res["effect"].notna().any() else None
    summary = {
        "pairs": len(clean), "tokens": clean[0].n_tokens, "first_query_position": first_diff,
        "clean_logit_diff": _num(z.clean_metric), "corrupted_logit_diff": _num(z.corrupted_metric),
        "clean_labels": [ds.labels[p.label] for p in clean], "corrupted_labels": [ds.labels[p.label] for p in corrupted],
        "top_heads": [{"layer": int(r.layer), "head": int(r.head), "effect": _num(r.effect)}
                      for r in heads.itertuples()],
        "resid_pre_peak": None if peak is None else {"layer": int(peak["layer"]), "position": int(peak["position"]),
                                                      "token": str(peak["token"]), "effect": _num(peak["effect"])},
    }
    return df[COLUMNS], summary

