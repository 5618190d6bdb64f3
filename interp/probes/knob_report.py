"""The knob analysis's result (``KnobResult``, with each intent pairing's ``Localisation``) and its
files: ``knob.json``, ``direction.safetensors`` and ``knob.html`` (figures). ``interp.probes.knob``
computes it and names the same classes."""

from __future__ import annotations

import html
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import torch
from safetensors.torch import save

from interp.probes.knob_task import KnobItem
from interp.results.folders import OutputFolder, writing
from interp.results.protocol import figure_html, write_json
from interp.results.reading import directions, knob
from interp.results.strict_json import dumps, finite
from interp.results.versions import versions

# What readers of knob.json (the app among them) may rely on: top-level keys, and each row's keys.


@dataclass
class Localisation:
    pairing: str
    layers: list[int]
    recovery: float  # of the final layer set
    single_layer: list[float]  # recovery when patching each layer alone
    full_recovery: float  # patching every layer: 1 up to rounding
    runs: list[dict[str, Any]] = field(default_factory=list)  # every patched set, in search order


@dataclass
class KnobResult:
    model: str
    settings: dict[str, Any]
    accuracy: dict[str, float]
    localisation: dict[str, Localisation]
    layers: list[int]
    layer: int
    directions: dict[str, torch.Tensor]  # oriented unit vectors: das, diff_means, random0..
    flip_rates: dict[str, float]
    random_flip_rates: list[float]
    correlation: dict[str, float]
    sweep: list[dict[str, Any]]
    das_items: int
    items: list[KnobItem]

    @property
    def random_flip_rate(self) -> float:
        return float(np.mean(self.random_flip_rates))

    # The result protocol (interp.results.protocol.Result); the files are written by the functions below.
    def to_dict(self) -> dict[str, Any]:
        """The ``knob.json`` document (keys described in the README); undefined numbers (a flip rate
        with no eligible prompts, a correlation with no spread) are None, written as null. The
        directions are not in it: ``save`` writes them to ``direction.safetensors``."""
        r = self
        sweep = [{**row, "context_share": (row["context_share_prior"] + row["context_share_context"]) / 2}
                 for row in r.sweep]
        for row in sweep:
            row["prior_share"] = 1 - row["context_share"]
        return finite({
            "model": r.model,
            "settings": r.settings,
            "versions": versions(),
            "accuracy": r.accuracy,
            "layers": r.layers,
            "layer": r.layer,
            "localisation": {p: {"layers": loc.layers, "recovery": loc.recovery, "single_layer": loc.single_layer,
                                 "full_recovery": loc.full_recovery,
                                 "runs": loc.runs} for p, loc in r.localisation.items()},
            "patching": [{"pairing": p, "layer": i, "effect": v}
                         for p, loc in r.localisation.items() for i, v in enumerate(loc.single_layer)],
            "flip_rate": r.flip_rates,
            "random_flip_rate": r.random_flip_rate,
            "random_flip_rates": r.random_flip_rates,
            "correlation": r.correlation.get("das", float("nan")),
            "correlations": r.correlation,
            "das_train_items": r.das_items,
            "sweep": sweep,
            "items": [{"context": it.context, "question": it.query, "prior_answer": it.prior,
                       "context_answer": it.context_object, "subject": it.subject} for it in r.items],
        })

    def save(self, folder: Any, *, force: bool = False) -> Path:
        """Write ``knob.json``, ``direction.safetensors`` and ``knob.html`` into ``folder``.

        >>> result.save("out/knob"); KnobResult.load("out/knob")          # doctest: +SKIP
        """
        return write_report(self, folder, force=force)

    @classmethod
    def load(cls, folder: Any) -> KnobResult:
        """Read a folder written by :meth:`save` (``knob.json`` and ``direction.safetensors``)."""
        return read_report(folder)

    def figures(self) -> dict[str, Any]:
        """``{"patching": ..., "sweep": ...}``: the report's two figures."""
        doc = self.to_dict()
        return {"patching": patching_figure(doc), "sweep": sweep_figure(doc)}


COLORS = {"das": "#1f77b4", "diff_means": "#ff7f0e", "random": "#7f7f7f"}


def patching_figure(doc: dict[str, Any]) -> go.Figure:
    """Recovery per layer from patching one layer (a bar group per pairing); the chosen layer
    dotted red, the other localised layers dotted grey. The report and the app draw this one."""
    df = pd.DataFrame(doc["patching"])
    fig = go.Figure()
    groups = df.groupby("pairing", sort=False) if "pairing" in df.columns else [("effect", df)]
    for pairing, part in groups:
        fig.add_bar(x=part["layer"], y=part["effect"], name=str(pairing))
    for layer in doc.get("layers") or []:
        if layer != doc["layer"]:
            fig.add_vline(x=layer, line_dash="dot", line_color="grey")
    fig.add_vline(x=doc["layer"], line_dash="dot", line_color="#d62728")
    fig.update_layout(title=f"Patching one layer's attention output, last token (chosen layer {doc['layer']} dotted red, "
                            "other localised layers grey)", xaxis_title="layer", yaxis_title="recovery", barmode="group",
                      height=380)
    return fig


def sweep_figure(doc: dict[str, Any]) -> go.Figure:
    """Share of context answers as the projection is set along each direction: a line per
    method, its per-intent shares dotted (prior) and dashed (context). The x axis is ``k``
    (offsets in half-gaps of the intents' means, comparable across methods) when the report
    has it, else the raw projection value."""
    df = pd.DataFrame(doc["sweep"])
    x = "k" if "k" in df.columns else "value"
    fig = go.Figure()
    for method, part in df.sort_values(x).groupby("method", sort=False):
        color = COLORS.get(str(method))
        fig.add_scatter(x=part[x], y=part["context_share"], mode="lines+markers", name=str(method), line={"color": color},
                        customdata=part["value"],
                        hovertemplate="value %{customdata:.3g}: %{y:.2f}<extra>" + str(method) + "</extra>")
        for intent, dash in (("prior", "dot"), ("context", "dash")):
            col = f"context_share_{intent}"
            if col in part.columns:
                fig.add_scatter(x=part[x], y=part[col], mode="lines", name=f"{method}, {intent} intent",
                                line={"color": color, "dash": dash, "width": 1})
    fig.update_layout(title=f"Answers from the context as the knob is turned (layer {doc['layer']}, last token)",
                      xaxis_title="k: projection set to midpoint + k × half-gap of the intents' means" if x == "k"
                      else "projection value set along the direction",
                      yaxis_title="share answered from the context", yaxis={"range": [-0.02, 1.02]}, height=380)
    return fig


def write_report(r: KnobResult, folder: str | Path | OutputFolder, *, force: bool = False) -> Path:
    """Write ``knob.json``, ``direction.safetensors`` (tensors ``direction`` (DAS), ``diff_means``,
    ``random0``...) and ``knob.html`` into ``folder`` (a path or an open ``OutputFolder``); the three
    land together and nothing else there is touched (see ``interp.results.folders``).

    Args:
        r: a ``KnobResult``.
        force: write beside files interp did not write.

    Returns:
        The folder's path.
    """
    doc = r.to_dict()
    figs = {"patching": patching_figure(doc), "sweep": sweep_figure(doc)}
    body = "".join(figure_html(f, name, full_html=False, include_plotlyjs="inline" if i == 0 else False)
                   for i, (name, f) in enumerate(figs.items()))
    summary = {k: doc[k] for k in ("accuracy", "layers", "layer", "flip_rate", "random_flip_rate", "correlations",
                                   "das_train_items")}
    page = (f"<!doctype html><html><head><meta charset=utf-8><title>Context knob: {html.escape(r.model)}</title></head>"
            f"<body style='font-family:sans-serif;max-width:1100px;margin:auto'><h1>Context knob — {html.escape(r.model)}</h1>"
            f"<pre>{html.escape(dumps(summary, indent=1))}</pre>{body}"
            f"<h2>Settings</h2><pre>{html.escape(dumps(doc['settings'], indent=1))}</pre></body></html>")
    tensors = {"direction" if k == "das" else k: v.float().contiguous() for k, v in r.directions.items()}
    with writing(folder, force=force, kind="knob") as out:
        write_json(out, "knob.json", doc)
        out.write_bytes("direction.safetensors", save(tensors, metadata={"site": r.settings["site"], "layer": str(r.layer)}))
        out.write_text("knob.html", page)
    return out.path


def read_report(folder: str | os.PathLike[str]) -> KnobResult:
    """A :class:`KnobResult` from a folder :func:`write_report` wrote (undefined numbers come back as
    NaN; reports written before items carried their subject read it as "")."""

    doc = knob(folder)  # checked: every key read below, with its type and range
    tensors = directions(Path(folder) / "direction.safetensors")
    nan = float("nan")

    def num(x: Any) -> float:
        return nan if x is None else float(x)

    def nums(d: dict[str, Any]) -> dict[str, float]:
        return {k: num(v) for k, v in d.items()}

    loc = {p: Localisation(p, list(v["layers"]), num(v["recovery"]), [num(x) for x in v["single_layer"]],
                           num(v["full_recovery"]), list(v.get("runs") or []))
           for p, v in doc["localisation"].items()}
    sweep = [{k: v for k, v in row.items() if k not in ("context_share", "prior_share")} for row in doc["sweep"]]
    items = [KnobItem(it.get("subject", ""), it["prior_answer"], it["context_answer"], it["context"], it["question"])
             for it in doc["items"]]
    return KnobResult(doc["model"], doc["settings"], nums(doc["accuracy"]), loc, list(doc["layers"]), int(doc["layer"]),
                      {"das" if k == "direction" else k: v for k, v in tensors.items()}, nums(doc["flip_rate"]),
                      [num(x) for x in doc["random_flip_rates"]], nums(doc["correlations"]), sweep,
                      int(doc["das_train_items"]), items)
