"""From findings to a circuit: heads and MLPs kept by their effect, edges between them kept by theirs.

Nodes are attention heads (``L3H5``, ``interp.core.sites.head_label``) and MLP layers (``MLP{l}``) whose node effect
(``attribution_patching`` or ``activation_patching`` rows, absolute value) reaches a threshold,
plus ``logits``. Edge scores use edge attribution patching (Syed et al.): the sender's output
difference (clean − corrupted; ``hook_result`` of a head, ``hook_mlp_out`` of an MLP) times the
gradient of the metric with respect to the receiver's *input branch*, taken by adding a zero
tensor to the input of the receiver's layer norm (so the residual skip is not part of it). A
layer's heads share one attention input, so an edge into a head scores the sender's effect
through that layer's attention; an edge into an MLP is exactly its branch. An edge into
``logits`` carries the sender's node effect (its total effect, not only its direct path).

>>> from interp.circuits.graph import build_circuit
>>> circuit = build_circuit(model, clean, corrupted, metric, node_threshold=0.1)   # doctest: +SKIP
>>> circuit.to_dict(); circuit.figures()["circuit"].show()                           # doctest: +SKIP
>>> circuit.save("out/circuit"); Circuit.load("out/circuit")                         # doctest: +SKIP
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from interp.circuits.attribution import AttributionResult, attribution_patching, attribution_table
from interp.circuits.patching import Metric, metric_per_item, prepare_metric
from interp.core.masks import position_kwargs
from interp.core.model import Model
from interp.core.sites import head_label, layer_glob, layer_of
from interp.results.folders import OutputFolder, writing
from interp.results.protocol import write_json
from interp.results.reading import circuit

FILE = "circuit.json"


@dataclass
class Circuit:
    """Nodes ``{id, kind, layer, head, effect}`` and edges ``{source, target, score}``.

    Attributes:
        model: the model's name.
        nodes: the nodes, dicts as above.
        settings: the thresholds and metric it was built with.
    """

    model: str
    nodes: list[dict[str, Any]]
    edges: list[dict[str, Any]]
    settings: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "settings": self.settings, "nodes": self.nodes, "edges": self.edges}

    def save(self, folder: str | os.PathLike[str] | OutputFolder, *, force: bool = False) -> Path:
        """Write ``circuit.json`` (strict JSON: a NaN effect is null) into ``folder``; other files
        there are left alone (see ``interp.results.folders``). Returns the folder."""
        with writing(folder, force=force, kind="circuit") as out:
            write_json(out, FILE, self.to_dict())
        return out.path

    @classmethod
    def load(cls, folder: str | os.PathLike[str]) -> Circuit:
        """Read a folder written by :meth:`save`."""

        return cls(**circuit(folder))  # checked: node kinds and indices, edges between known nodes

    def figures(self) -> dict[str, Any]:
        """``{"circuit": the graph figure}``."""
        return {"circuit": self.figure()}

    def figure(self):
        """The graph in plotly: layers bottom to top, edge width by |score|, red positive, blue negative."""
        import plotly.graph_objects as go

        pos = {}
        for n in self.nodes:
            if n["kind"] == "logits":
                pos[n["id"]] = (0.0, max([m["layer"] for m in self.nodes if m["kind"] != "logits"], default=0) + 1.5)
            elif n["kind"] == "mlp":
                pos[n["id"]] = (-1.5, n["layer"] + 0.5)
            else:
                pos[n["id"]] = (float(n["head"]), float(n["layer"]))
        fig = go.Figure()
        def size(x: Any) -> float:  # a missing or non-finite score (null after a strict save) draws thin
            return abs(float(x)) if x is not None and math.isfinite(float(x)) else 0.0

        top = max([size(e["score"]) for e in self.edges], default=1.0) or 1.0
        for e in self.edges:
            (x0, y0), (x1, y1) = pos[e["source"]], pos[e["target"]]
            fig.add_trace(go.Scatter(x=[x0, x1], y=[y0, y1], mode="lines", hoverinfo="text", showlegend=False,
                                     text=f"{e['source']} → {e['target']}: {e['score']}",
                                     line={"width": 1 + 6 * size(e["score"]) / top,
                                           "color": "#d62728" if (e["score"] or 0) > 0 else "#1f77b4"}))
        fig.add_trace(go.Scatter(
            x=[pos[n["id"]][0] for n in self.nodes], y=[pos[n["id"]][1] for n in self.nodes], mode="markers+text",
            text=[n["id"] for n in self.nodes], textposition="top center", showlegend=False,
            marker={"size": 14, "color": [n.get("effect") or 0 for n in self.nodes], "colorscale": "RdBu",
                    "cmid": 0, "showscale": True, "colorbar": {"title": "node effect"}},
            hovertext=[f"{n['id']}: effect {n.get('effect')}" for n in self.nodes]))
        fig.update_layout(title=f"Circuit — {self.model}", xaxis_title="head (MLPs on the left)", yaxis_title="layer")
        return fig


def _node_effects(att: pd.DataFrame) -> dict[str, tuple[str, int, int | None, float]]:
    out: dict[str, tuple[str, int, int | None, float]] = {}
    kind = att["site"].map(layer_glob)
    heads = att[kind == "blocks.*.attn.hook_z"].groupby(["layer", "head"])["effect"].sum()
    for (la, h), v in heads.items():
        out[head_label(la, h)] = ("head", int(la), int(h), float(v))
    mlps = att[kind == "blocks.*.mlp.hook_post"].groupby("layer")["effect"].sum()
    for la, v in mlps.items():
        out[f"MLP{la}"] = ("mlp", int(la), None, float(v))
    return out


def build_circuit(model: Model, clean: Any, corrupted: Any, metric: Metric, *, node_threshold: float = 0.1,
                  edge_threshold: float = 0.05, node_effects: AttributionResult | pd.DataFrame | None = None) -> Circuit:
    """Keep nodes with |effect| >= ``node_threshold`` and edges among them with |score| >= ``edge_threshold``.

    ``node_effects`` is an ``attribution_patching`` table (computed here when not given); all
    effects and scores are normalised by ``m_clean − m_corrupted``.

    Args:
        model: the model (an ``interp.Model``)
        clean: the clean inputs.
        corrupted: corrupted inputs of the same length.
        metric: logits -> one value per item.

    Returns:
        A ``Circuit``.
    """
    clean_t, corr_t = model.to_tokens(clean), model.to_tokens(corrupted)
    metric = prepare_metric(metric, model, *clean_t["input_ids"].shape)  # before any forward pass
    att = attribution_table(node_effects if node_effects is not None else attribution_patching(model, clean, corrupted, metric))
    kept = {k: v for k, v in _node_effects(att).items() if abs(v[3]) >= node_threshold}
    L = model.cfg.n_layers
    senders = [f"blocks.{la}.attn.hook_result" for la in range(L)] + [f"blocks.{la}.hook_mlp_out" for la in range(L)]
    with model.trace(clean_t, sites=senders) as ct:
        pass
    assert ct.logits is not None
    m_clean = float(metric_per_item(metric, ct.logits, clean_t["input_ids"].shape[0]).mean())
    # Receiver inputs: zero tensors added where each layer's attention and MLP read the stream
    # (their norms' inputs), so the gradient there is the direct path from every sender.
    deltas: dict[tuple[str, int], torch.Tensor] = {}

    def add_delta(x: torch.Tensor, site: str) -> torch.Tensor:
        layer = layer_of(site)
        assert layer is not None
        d = torch.zeros_like(x, requires_grad=True)
        deltas[("attn" if site.endswith("hook_attn_in") else "mlp", layer)] = d
        return x + d

    parallel = model.adapter.is_parallel(model.hf.config)
    receivers = ["blocks.*.hook_attn_in"] + ([] if parallel else ["blocks.*.hook_mlp_in"])
    with torch.enable_grad(), model.trace(sites=senders, interventions=dict.fromkeys(receivers, add_delta)) as rt:
        logits = model.hf(**corr_t, **position_kwargs(corr_t.get("attention_mask")), use_cache=False).logits
        value = metric_per_item(metric, logits, corr_t["input_ids"].shape[0]).mean()
        keys = list(deltas)
        grads = dict(zip(keys, torch.autograd.grad(value, [deltas[k] for k in keys], allow_unused=True), strict=True))
    m_corr = float(value.detach())
    gap = m_clean - m_corr

    def sender_delta(node: str) -> torch.Tensor:
        kind, la, head, _ = kept[node]
        if kind == "head":
            name = f"blocks.{la}.attn.hook_result"
            return (ct[name][:, :, head] - rt[name][:, :, head]).float()
        name = f"blocks.{la}.hook_mlp_out"
        return (ct[name] - rt[name]).float()

    edges = []
    for src, (skind, sl, _, _) in kept.items():
        d = sender_delta(src)
        for dst, (dkind, dl, _, _) in kept.items():
            # Heads of layer l feed MLP l (unless parallel) and everything above; MLP l feeds layers above.
            feeds = dl > sl or (dl == sl and skind == "head" and dkind == "mlp" and not parallel)
            if not feeds:
                continue
            g = grads.get(("attn" if dkind == "head" else "mlp", dl))
            if g is None:
                continue
            score = float((d * g.to(d.device).float()).sum()) / gap if gap else float("nan")
            if abs(score) >= edge_threshold:
                edges.append({"source": src, "target": dst, "score": score})
        edges.append({"source": src, "target": "logits", "score": kept[src][3]})
    nodes = [{"id": k, "kind": v[0], "layer": v[1], "head": v[2], "effect": v[3]} for k, v in kept.items()]
    nodes.append({"id": "logits", "kind": "logits", "layer": L, "head": None, "effect": None})
    settings = {"node_threshold": node_threshold, "edge_threshold": edge_threshold,
                "clean_metric": m_clean, "corrupted_metric": m_corr}
    return Circuit(model.name, nodes, edges, settings)
