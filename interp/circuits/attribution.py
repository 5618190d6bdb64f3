"""Attribution patching: a first-order estimate of every patch from one forward and one backward pass.

The effect of restoring a clean activation ``a_clean`` in the corrupted run is approximated by
``(a_clean − a_corr) · ∂m/∂a`` at the corrupted activation (Nanda's "attribution patching";
Syed et al.'s edge attribution patching uses the same product), normalised like
``activation_patching`` by ``m_clean − m_corr``. Every attention head (``hook_z``, summed over
d_head) and every MLP neuron (``blocks.*.mlp.hook_post``) gets its score from the same backward pass.
The gradient is taken by adding a zero tensor that requires grad at each site, so the graph is
never cut and the model's own weights need no gradients.

>>> from interp.circuits.attribution import attribution_patching, check_against_patching
>>> att = attribution_patching(model, clean, corrupted, metric)           # doctest: +SKIP
>>> check_against_patching(model, clean, corrupted, metric, att, n=20)    # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch

from interp.circuits.patching import (
    Metric,
    Patch,
    PatchingResult,
    metric_per_item,
    patch_interventions,
    prepare_metric,
    run_metric,
)
from interp.core.masks import position_kwargs
from interp.core.model import Model
from interp.core.sites import Pattern, layer_glob, layer_of
from interp.errors import BadInputError, UnknownNameError
from interp.results.protocol import TableResult

HEAD_SITE, NEURON_SITE = "blocks.{l}.attn.hook_z", "blocks.{l}.mlp.hook_post"  # the sites attribution scores
COLUMNS = ["site", "layer", "head", "neuron", "position", "effect"]


class AttributionResult(TableResult):
    """``attribution_patching``'s table (``site, layer, head, neuron, position, effect``) and the
    clean and corrupted metrics; ``result["effect"]`` reads the table (``result.df``)."""

    NAME = "attribution"

    def __init__(self, df: pd.DataFrame, *, clean_metric: float, corrupted_metric: float):
        super().__init__(df, clean_metric=clean_metric, corrupted_metric=corrupted_metric)

    def heads(self) -> PatchingResult:
        """The head rows as a ``PatchingResult`` (its heatmaps)."""
        return as_patching_result(self.df, self.meta["clean_metric"], self.meta["corrupted_metric"])

    def figures(self) -> dict[str, Any]:
        """Heads: a layer × head heatmap; neurons: the summed effect of each layer's neurons."""
        import plotly.graph_objects as go

        figs = self.heads().figures() if self.df["head"].notna().any() else {}
        neurons = self.df[self.df["neuron"].notna()]
        if len(neurons):
            by_layer = neurons.groupby("layer")["effect"].sum()
            figs["neurons_by_layer"] = go.Figure(go.Bar(x=by_layer.index, y=by_layer.to_numpy())).update_layout(
                title="Attribution of each layer's MLP neurons (summed)", xaxis_title="layer", yaxis_title="effect")
        return figs


def attribution_table(attribution: AttributionResult | pd.DataFrame) -> pd.DataFrame:
    return attribution.df if isinstance(attribution, AttributionResult) else attribution


def _is_head(name: str) -> bool:
    return layer_glob(name) == HEAD_SITE.replace("{l}", "*")


def _pair(model: Model, clean: Any, corrupted: Any) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    clean_t, corr_t = model.to_tokens(clean), model.to_tokens(corrupted)
    if clean_t["input_ids"].shape != corr_t["input_ids"].shape:
        raise BadInputError(f"clean and corrupted inputs must have the same shape (batch, tokens) so positions line "
                            f"up; got {tuple(clean_t['input_ids'].shape)} and {tuple(corr_t['input_ids'].shape)}")
    return clean_t, corr_t


def gradients_at(model: Model, tokens: dict[str, torch.Tensor], metric: Metric, names: list[str]) -> tuple[float, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Metric, activations and ∂metric/∂activation at each site, from one forward and one backward pass."""
    deltas: dict[str, torch.Tensor] = {}
    acts: dict[str, torch.Tensor] = {}

    def tap(x: torch.Tensor, site: str) -> torch.Tensor:
        acts[site] = x.detach()
        d = torch.zeros_like(x, requires_grad=True)
        deltas[site] = d
        return x + d

    with torch.enable_grad(), model.trace(interventions={n: tap for n in names}):
        logits = model.hf(**tokens, **position_kwargs(tokens.get("attention_mask")), use_cache=False).logits
        value = metric_per_item(metric, logits, tokens["input_ids"].shape[0]).mean()
        grads = torch.autograd.grad(value, [deltas[n] for n in names], allow_unused=True)
    out = {n: (g if g is not None else torch.zeros_like(deltas[n])).detach() for n, g in zip(names, grads, strict=True)}
    return float(value.detach()), acts, out


def attribution_patching(
    model: Model,
    clean: Any,
    corrupted: Any,
    metric: Metric,
    *,
    sites: Pattern | Sequence[Pattern] = ("blocks.*.attn.hook_z", "blocks.*.mlp.hook_post"),
    positions: str = "sum",
) -> AttributionResult:
    """Estimated denoising effect of every head (``blocks.*.attn.hook_z``) and MLP neuron
    (``blocks.*.mlp.hook_post``); ``sites`` may name some layers only (names, globs, short names).

    ``positions="sum"`` gives one score per unit (all positions patched together, ``position``
    is NA), ``"each"`` one per unit and position. Returns an ``AttributionResult``: a tidy table
    (``.df``) with columns ``site, layer, head, neuron, position, effect`` (``site`` the full
    name, ``head`` NA for neurons, ``neuron`` NA for heads) and the two reference metrics.

    Args:
        model: the model (an ``interp.Model``)
        clean: the clean inputs.
        corrupted: corrupted inputs of the same length.
        metric: logits -> one value per item (e.g. ``logit_diff``).
    """
    names = [s.name for s in model.resolve(sites, among=(HEAD_SITE, NEURON_SITE), what="attribution site")]
    if positions not in ("sum", "each"):
        raise UnknownNameError("positions", positions, ["sum", "each"], plural="positions")
    clean_t, corr_t = _pair(model, clean, corrupted)
    prepare_metric(metric, model, *clean_t["input_ids"].shape)
    with model.trace(clean_t, sites=names) as tr:
        pass
    m_clean = run_metric(model, clean_t, metric)
    m_corr, acts, grads = gradients_at(model, corr_t, metric, names)
    gap = m_clean - m_corr
    frames = []
    for n in names:
        is_head = _is_head(n)
        prod = (tr[n].to(acts[n].device) - acts[n]) * grads[n]  # [b, pos, H, d] or [b, pos, d_mlp]
        if is_head:
            prod = prod.sum(-1)  # per head
        # The metric is a batch mean, so a unit's effect is the sum over items of its per-item terms.
        per = prod.sum(0).double()  # [pos, units]
        per = per.sum(0, keepdim=True) if positions == "sum" else per
        eff = (per / gap).cpu().numpy() if gap != 0 else np.full(tuple(per.shape), np.nan)
        pos_idx, unit_idx = np.meshgrid(np.arange(eff.shape[0]), np.arange(eff.shape[1]), indexing="ij")
        frames.append(pd.DataFrame({
            "site": n, "layer": layer_of(n),
            "head": pd.array(unit_idx.ravel() if is_head else [None] * unit_idx.size, dtype="Int64"),
            "neuron": pd.array(unit_idx.ravel() if not is_head else [None] * unit_idx.size, dtype="Int64"),
            "position": pd.array(pos_idx.ravel() if positions == "each" else [None] * pos_idx.size, dtype="Int64"),
            "effect": eff.ravel(),
        }))
    return AttributionResult(pd.concat(frames, ignore_index=True)[COLUMNS], clean_metric=m_clean, corrupted_metric=m_corr)


def check_against_patching(model: Model, clean: Any, corrupted: Any, metric: Metric,
                           attribution: AttributionResult | pd.DataFrame, *,
                           n: int = 20, seed: int = 0, top: int = 5) -> pd.DataFrame:
    """Real denoising patches for a sample of the attributed units: the ``top`` largest |effect| and random others.

    Returns ``site, layer, head, neuron, attribution, patched`` per sampled unit; the table's
    ``attrs["pearson"]`` holds the correlation of the two columns. Position-summed attributions only.

    Args:
        model: the model (an ``interp.Model``)
        clean: the clean inputs.
        corrupted: corrupted inputs of the same length.
        metric: logits -> one value per item.
        n: units sampled in all.
        seed: seed of the random sample.
    """
    attribution = attribution_table(attribution)
    if attribution["position"].notna().any():
        raise BadInputError("check_against_patching needs an attribution with positions='sum'")
    rng = np.random.default_rng(seed)
    order = attribution["effect"].abs().sort_values(ascending=False).index
    chosen = list(order[:top])
    rest = [i for i in attribution.index if i not in set(chosen)]
    chosen += list(rng.choice(rest, size=min(max(0, n - top), len(rest)), replace=False))
    sample = attribution.loc[chosen]
    clean_t, corr_t = _pair(model, clean, corrupted)
    prepare_metric(metric, model, *clean_t["input_ids"].shape)
    items = clean_t["input_ids"].shape[0]
    m_clean, m_corr = run_metric(model, clean_t, metric), run_metric(model, corr_t, metric)
    patched = []
    for row in sample.itertuples():
        name = str(row.site)
        with model.trace(clean_t, sites=[name]) as tr:
            pass
        if _is_head(name):
            fns = patch_interventions([Patch(name, int(row.layer), int(row.head), None)], {name: tr[name]}, items)
            value = run_metric(model, corr_t, metric, fns)
        else:
            neuron = int(row.neuron)
            src = tr[name]

            def put(x: torch.Tensor, _s: str, src=src, neuron=neuron) -> torch.Tensor:
                x = x.clone()
                x[..., neuron] = src[..., neuron].to(x.device, x.dtype)
                return x

            value = run_metric(model, corr_t, metric, {name: put})
        patched.append((value - m_corr) / (m_clean - m_corr) if m_clean != m_corr else float("nan"))
    out = sample[["site", "layer", "head", "neuron"]].assign(attribution=sample["effect"].to_numpy(), patched=patched)
    out = out.reset_index(drop=True)
    out.attrs["pearson"] = float(np.corrcoef(out["attribution"], out["patched"])[0, 1]) if len(out) > 2 else float("nan")
    return out


def as_patching_result(attribution: AttributionResult | pd.DataFrame, clean_metric: float,
                       corrupted_metric: float) -> PatchingResult:
    """Head rows of an attribution table as a ``PatchingResult`` (for its heatmap)."""
    attribution = attribution_table(attribution)
    heads = attribution[attribution["site"].map(_is_head)].assign(metric=float("nan"))
    return PatchingResult(heads[["site", "layer", "head", "position", "effect", "metric"]].reset_index(drop=True),
                          clean_metric, corrupted_metric, "attribution (denoise)")
