"""Head ablation: replace chosen heads' outputs (``hook_z``, per query head) by zero, a mean, or another input's.

- ``zero``: z = 0 (the head writes only o_proj's bias, if any).
- ``mean``: z = its mean over the batch and positions of ``reference`` (default: the inputs).
- ``resample``: z = its value at the same position on another input: ``reference`` items,
  or the inputs' own items shifted by one (``roll``) when no reference is given.

>>> from interp.circuits.ablation import ablate_heads, ablation_scan
>>> with model.trace(ids, interventions=ablate_heads(model, [(1, 0)], "mean", ids)) as tr:   # doctest: +SKIP
...     pass
>>> ablation_scan(model, ids, metric, method="zero")                                        # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd
import torch

from interp import logs
from interp.circuits.patching import Metric, metric_per_item, prepare_metric, run_metric
from interp.core import interventions as iv
from interp.core.model import Model
from interp.errors import BadInputError, UnknownNameError, as_index
from interp.results.protocol import TableResult

METHODS = ("zero", "mean", "resample")


class AblationResult(TableResult):
    """``ablation_scan``'s table (``layer, head, method, metric, effect``), the method and the
    unablated metric; ``result["effect"]`` reads the table (``result.df``)."""

    NAME = "ablation"

    def __init__(self, df: pd.DataFrame, *, method: str, base_metric: float | None):
        # a metric saved as null (NaN) reads back as NaN, so the figure's title still formats it
        super().__init__(df, method=method, base_metric=float("nan") if base_metric is None else base_metric)

    def figures(self) -> dict[str, Any]:
        """A layer × head heatmap of the effect (metric change) of ablating each head."""
        import plotly.graph_objects as go

        z = self.df.pivot_table(index="layer", columns="head", values="effect")
        lim = float(max(1e-9, abs(z.to_numpy()).max())) if z.size else 1.0
        fig = go.Figure(go.Heatmap(z=z.to_numpy(), x=list(z.columns), y=[str(i) for i in z.index], colorscale="RdBu",
                                   zmid=0, zmin=-lim, zmax=lim, colorbar={"title": "effect"}))
        fig.update_layout(title=f"{self.meta['method'].capitalize()} ablation of each head: metric change "
                                f"(unablated {self.meta['base_metric']:.3f})", xaxis_title="head", yaxis_title="layer",
                          yaxis={"autorange": "reversed"})
        return {"heatmap": fig}


def _z_values(model: Model, inputs: Any, layers: set[int]) -> dict[int, torch.Tensor]:
    sites = [f"blocks.{la}.attn.hook_z" for la in sorted(layers)]
    with model.trace(inputs, sites=sites) as tr:
        pass
    return {la: tr[f"blocks.{la}.attn.hook_z"] for la in layers}


def ablate_heads(model: Model, heads: Sequence[tuple[int, int]], method: str = "mean", reference: Any = None,
                 inputs: Any = None) -> dict[str, Any]:
    """Interventions (for ``model.trace`` / ``model.run``) that ablate ``(layer, head)`` pairs.

    ``mean`` needs ``reference`` (or ``inputs``) to average over; ``resample`` takes ``reference``
    (same shape as the run) or rolls ``inputs`` by one item.

    Args:
        heads: ``(layer, head)`` pairs.
        method: ``zero``, ``mean`` or ``resample``.

    Returns:
        A dict ``{site: intervention}`` to pass as ``interventions=``.
    """
    if method not in METHODS:
        raise UnknownNameError("ablation method", method, METHODS)
    by_layer: dict[int, list[int]] = {}
    for pair in heads:
        if not (isinstance(pair, (tuple, list)) and len(pair) == 2
                and all(as_index(i) is not None for i in pair)):
            raise BadInputError(f"ablate_heads: heads must be (layer, head) pairs such as [(1, 0), (2, 3)], got {pair!r}")
        layer, head = pair
        model.check_layer(layer)
        model.check_heads([head])
        by_layer.setdefault(layer, []).append(head)
    if method == "zero":
        return {f"blocks.{la}.attn.hook_z": iv.zero(heads=hs) for la, hs in by_layer.items()}
    source = reference if reference is not None else inputs
    if source is None:
        raise BadInputError(f"{method} ablation needs reference= (or inputs=) to take its values from")
    values = _z_values(model, source, set(by_layer))
    out: dict[str, Any] = {}
    for la, hs in by_layer.items():
        z = values[la]
        if method == "mean":
            out[f"blocks.{la}.attn.hook_z"] = iv.mean_ablate(z.float().mean(dim=(0, 1)), heads=hs)
        else:
            if reference is None:
                if z.shape[0] < 2:
                    raise BadInputError("resample ablation without a reference needs a batch of at least 2 inputs")
                z = z.roll(1, dims=0)
            out[f"blocks.{la}.attn.hook_z"] = iv.patch(z, heads=hs)
    return out


def ablation_scan(model: Model, inputs: Any, metric: Metric, *, method: str = "mean", reference: Any = None,
                  layers: Sequence[int] | None = None, progress: bool = True) -> AblationResult:
    """Ablate each head alone; returns an ``AblationResult`` whose table has ``layer, head, method,
    metric, effect`` (effect = metric change from the unablated run).

    Args:
        model: the model (an ``interp.Model``)
        inputs: the inputs run.
        reference: what ``mean``/``resample`` draw from (default: ``inputs``).
        layers: the layers scanned (default: all).
        progress: show a progress bar.
    """
    if method not in METHODS:
        raise UnknownNameError("ablation method", method, METHODS)
    tokens = model.to_tokens(inputs)
    n_items, n_pos = tokens["input_ids"].shape
    prepare_metric(metric, model, n_items, n_pos)
    layer_list = [model.check_layer(la) for la in (layers if layers is not None else range(model.cfg.n_layers))]
    if method == "resample":
        if reference is None and n_items < 2:
            raise BadInputError("resample ablation without a reference needs a batch of at least 2 inputs")
        if reference is not None:
            ref_shape = tuple(model.to_tokens(reference)["input_ids"].shape)
            if ref_shape != (n_items, n_pos):
                raise BadInputError(f"resample ablation: reference has shape {ref_shape} (batch, tokens) but the inputs "
                                    f"have {(n_items, n_pos)}; they must match so each head takes the value at its "
                                    "own position")
    elif method == "mean" and reference is not None:
        model.to_tokens(reference)
    base = run_metric(model, tokens, metric)
    rows = []
    for la in logs.progress(layer_list, f"{method} ablation", progress, leave=False):
        for h in range(model.cfg.n_heads):
            fns = ablate_heads(model, [(la, h)], method, reference=reference, inputs=tokens)
            with model.trace(tokens, interventions=fns) as tr:
                assert tr.logits is not None
                value = float(metric_per_item(metric, tr.logits, tokens["input_ids"].shape[0]).mean())
            rows.append({"layer": la, "head": h, "method": method, "metric": value, "effect": value - base})
    return AblationResult(pd.DataFrame(rows), method=method, base_metric=base)
