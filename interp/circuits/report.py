"""``ICLResult``: the ICL-circuit tables, their figures, and ``icl.json`` / ``icl.parquet`` / ``report.html``.

The files land together when the report is complete (``interp.results.folders``). ``report.html`` carries its
own copy of plotly.js; the separate figure files (``accuracy.html``, ...) share one
``plotly.min.js`` written next to them, so they draw offline without 4.8 MB each.

>>> result = icl_circuit(model)                                        # doctest: +SKIP
>>> result.figure("steps").show(); result.save("out/icl")              # doctest: +SKIP
"""

from __future__ import annotations

import html
import math
from pathlib import Path
from typing import Any

import pandas as pd

from interp.circuits.icl_patching import METRIC, PATCH_SITES
from interp.core.sites import layer_glob
from interp.errors import UnknownNameError
from interp.results.folders import OutputFolder, writing
from interp.results.protocol import figure_html, write_json, write_table
from interp.results.reading import ICL_TABLES, icl
from interp.results.strict_json import dumps, finite
from interp.results.versions import versions as _versions

# The tables of ``icl.json`` and the columns each row has (the app reads the same schema).
FIGURES = ("accuracy", "steps", "ablation", "heads", "patching")
PATCHING_FILE = "patching.parquet"
PLOTLY_JS = "plotly.min.js"


def _write_plotly_js(out: OutputFolder) -> None:
    """``plotly.min.js`` (the installed plotly's bundle) next to the figure files."""
    from plotly.offline import get_plotlyjs

    out.write_text(PLOTLY_JS, get_plotlyjs())


class ICLResult:
    """Tables by name (``accuracy``, ``summarize``, ``merge``, ``retrieval``, ``heads``, ``ablation``).

    ``patching`` (when measured) holds the activation-patching rows of ``interp.circuits.icl_patching``
    (saved as ``patching.parquet``) and ``patching_summary`` their numbers per dataset (in ``icl.json``).

    Args:
        model: the model's name.
        tables: the tables by name.
        settings: the run's settings.
        n_layers: layers of the model.
        n_heads: query heads per layer.
        versions: the versions that computed it.
    """

    def __init__(self, model: str, tables: dict[str, pd.DataFrame], *, settings: dict[str, Any] | None = None,
                 n_layers: int = 0, n_heads: int = 0, versions: dict[str, str] | None = None,
                 patching: pd.DataFrame | None = None, patching_summary: dict[str, Any] | None = None):
        self.model, self.settings = model, settings or {}
        self.tables = {t: tables.get(t, pd.DataFrame()) for t in ICL_TABLES}
        self.n_layers, self.n_heads = n_layers, n_heads
        self.versions = versions or _versions()
        self.patching = patching if patching is not None and len(patching) else None
        self.patching_summary = patching_summary

    def __repr__(self) -> str:
        sizes = ", ".join(f"{t}: {len(df)}" for t, df in self.tables.items())
        return f"ICLResult({self.model!r}; {sizes})"

    def __getitem__(self, table: str) -> pd.DataFrame:
        if table not in self.tables:
            raise UnknownNameError("table", table, ICL_TABLES)
        return self.tables[table]

    # -- serialisation (the result protocol, interp.results.protocol.Result) ----------------------------------
    def to_dict(self) -> dict[str, Any]:
        """The ``icl.json`` document (settings, shape, every table's rows, the patching summary)."""
        out: dict[str, Any] = {"model": self.model, "settings": self.settings, "versions": self.versions,
                               "shape": {"layers": self.n_layers, "heads": self.n_heads}}
        for t, df in self.tables.items():
            out[t] = finite(df.to_dict("records"))
        if self.patching_summary is not None:

            out["patching"] = {"file": PATCHING_FILE if self.patching is not None else None, "direction": "denoise",
                               "metric": METRIC, "sites": list(PATCH_SITES.values()),
                               "datasets": self.patching_summary}
        return out

    def figures(self) -> dict[str, Any]:
        """Every figure by name (``accuracy``, ``steps``, ``ablation``, ``heads``, ``patching``)."""
        return {name: self.figure(name) for name in FIGURES}

    def long(self) -> pd.DataFrame:
        """All tables stacked, with a ``table`` column naming each row's table."""
        parts = [df.assign(table=t) for t, df in self.tables.items() if len(df)]
        if not parts:
            return pd.DataFrame({"table": []})
        out = pd.concat(parts, ignore_index=True)
        for col in out.columns:  # mixed object columns (e.g. seed None/int) as strings for parquet
            if out[col].dtype == object:
                out[col] = out[col].map(lambda v: None if v is None or (isinstance(v, float) and math.isnan(v)) else str(v))
        return out[["table", *[c for c in out.columns if c != "table"]]]

    @classmethod
    def load(cls, folder: str | Path) -> ICLResult:
        """Read a saved result back from its ``icl.json``."""

        data = icl(folder)  # checked: row keys and types, indices within the shape, patching.parquet
        tables = {t: pd.DataFrame(rows) for t, rows in data.pop("tables").items()}
        return cls(data.pop("model"), tables, **data)

    def save(self, folder: str | Path | OutputFolder, *, force: bool = False) -> Path:
        """Write ``icl.json``, ``icl.parquet``, ``patching.parquet``, the figures and ``report.html`` into ``folder``
        (a path or an open ``OutputFolder``).

        The files land together; a ``patching.parquet`` of an earlier run that this one does not write is
        removed with the rest of that run's files, so the folder never pairs this ``icl.json`` with another
        run's patching, and files interp did not write are never touched (see ``interp.results.folders``). The
        figure files load ``plotly.min.js`` from the folder; ``report.html`` embeds it.
        """
        with writing(folder, force=force, kind="icl") as out:
            if self.patching is not None:
                write_table(out, PATCHING_FILE, self.patching)
            write_json(out, "icl.json", self.to_dict())
            write_table(out, "icl.parquet", self.long())
            figs = self.figures()
            _write_plotly_js(out)
            for name, fig in figs.items():
                out.write_text(f"{name}.html", figure_html(fig, name, include_plotlyjs="directory"))
            out.write_text("report.html", self.render_html(figs))
        return out.path

    # -- figures ----------------------------------------------------------------------------------
    def figure(self, name: str, dataset: str | None = None):
        """A plotly figure: ``accuracy`` (by k), ``steps`` (the three steps by layer), ``ablation``,
        ``heads``, ``patching``; ``dataset``: that dataset's rows only (the report and the app draw
        these same figures)."""
        if name not in FIGURES:
            raise UnknownNameError("figure", name, FIGURES)
        if dataset is None:
            return getattr(self, f"_fig_{name}")()
        fig = getattr(self.only(dataset), f"_fig_{name}")()
        return fig.update_layout(title=f"{fig.layout.title.text} — {dataset}")

    def only(self, dataset: str) -> ICLResult:
        """The same result with one dataset's rows."""
        def keep(df: pd.DataFrame) -> pd.DataFrame:
            return df[df["dataset"].astype(str) == dataset] if "dataset" in df.columns else df

        return ICLResult(self.model, {t: keep(df) for t, df in self.tables.items()}, settings=self.settings,
                         n_layers=self.n_layers, n_heads=self.n_heads, versions=self.versions,
                         patching=None if self.patching is None else keep(self.patching),
                         patching_summary=self.patching_summary)

    def _fig_accuracy(self):
        import plotly.graph_objects as go

        df = self.tables["accuracy"]
        fig = go.Figure()
        for ds, part in df.groupby("dataset", sort=False) if len(df) else []:
            fig.add_trace(go.Scatter(x=part["k"], y=part["accuracy"], mode="lines+markers", name=str(ds)))
        fig.update_layout(title=f"ICL accuracy by demonstrations — {self.model}", xaxis_title="k (demonstrations)",
                          yaxis_title="accuracy (label-space argmax)", yaxis={"range": [0, 1.02]})
        return fig

    def _fig_steps(self):
        import plotly.graph_objects as go
        from plotly.subplots import make_subplots

        fig = make_subplots(rows=1, cols=3, subplot_titles=(
            "1 summarize: kernel alignment", "2 merge: forerunner heads", "3 retrieval: (correct) induction heads"))
        colors = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728"]
        datasets = list(dict.fromkeys(pd.concat([self.tables[t].get("dataset", pd.Series(dtype=str))
                                                  for t in ("summarize", "merge", "retrieval")])))
        for i, ds in enumerate(datasets):
            c = colors[i % len(colors)]
            s = self.tables["summarize"]
            if len(s):
                part = s[s["dataset"] == ds]
                fig.add_trace(go.Scatter(x=part["layer"], y=part["alignment"], name=f"{ds}: alignment",
                                         line={"color": c}), 1, 1)
                if "chance" in part:
                    fig.add_trace(go.Scatter(x=part["layer"], y=part["chance"], name=f"{ds}: chance",
                                             line={"color": c, "dash": "dot"}, showlegend=False), 1, 1)
            m = self.tables["merge"]
            if len(m):
                part = m[m["dataset"] == ds]
                fig.add_trace(go.Scatter(x=part["layer"], y=part["heads_above"], name=f"{ds}: merge heads",
                                         line={"color": c}), 1, 2)
            r = self.tables["retrieval"]
            if len(r):
                part = r[r["dataset"] == ds]
                fig.add_trace(go.Scatter(x=part["layer"], y=part["induction_heads"], name=f"{ds}: induction",
                                         line={"color": c}), 1, 3)
                fig.add_trace(go.Scatter(x=part["layer"], y=part["correct_induction_heads"],
                                         name=f"{ds}: correct induction", line={"color": c, "dash": "dash"}), 1, 3)
        fig.update_xaxes(title_text="layer")
        fig.update_yaxes(title_text="alignment", row=1, col=1)
        fig.update_yaxes(title_text="heads per prompt", row=1, col=2)
        fig.update_yaxes(title_text="heads per prompt", row=1, col=3)
        fig.update_layout(title=f"The three steps by layer — {self.model}", width=1200, height=420)
        return fig

    def _fig_ablation(self):
        import plotly.graph_objects as go
        from plotly.subplots import make_subplots

        df = self.tables["ablation"]
        datasets = list(dict.fromkeys(df["dataset"])) if len(df) else []
        fig = make_subplots(rows=1, cols=max(1, len(datasets)), subplot_titles=datasets or ["no ablations"])
        palette = {"summarize": "#1f77b4", "merge": "#ff7f0e", "retrieval": "#2ca02c"}
        for col, ds in enumerate(datasets, start=1):
            part = df[df["dataset"] == ds]
            for step, color in palette.items():
                own = part[part["step"] == step]
                rnd = part[(part["step"] == "random") & (part["matched_step"] == step)].groupby("quarter")["accuracy"].mean()
                fig.add_trace(go.Bar(x=[f"Q{q + 1}" for q in own["quarter"]], y=own["accuracy"], name=step,
                                     marker_color=color, showlegend=col == 1, legendgroup=step), 1, col)
                fig.add_trace(go.Bar(x=[f"Q{q + 1}" for q in rnd.index], y=rnd.values, name=f"random ({step})",
                                     marker_color=color, opacity=0.35, showlegend=col == 1,
                                     legendgroup=f"r{step}"), 1, col)
            if len(part):
                fig.add_hline(y=float(part["baseline_accuracy"].iloc[0]), line_dash="dot", row=1, col=col)
        fig.update_layout(barmode="group", title=f"Knockout of each step's edges by depth quarter vs random edges — {self.model}",
                          yaxis_title="accuracy", width=500 * max(1, len(datasets)) + 200, height=420)
        return fig

    def _fig_heads(self):
        import numpy as np
        import plotly.graph_objects as go
        from plotly.subplots import make_subplots

        df = self.tables["heads"]
        datasets = list(dict.fromkeys(df["dataset"])) if len(df) else []
        cols = ("merge", "retrieval", "correct")
        fig = make_subplots(rows=max(1, len(datasets)), cols=3,
                            subplot_titles=[f"{ds}: {c}" for ds in datasets for c in cols] or ["no heads"])
        for r, ds in enumerate(datasets, start=1):
            part = df[df["dataset"] == ds]
            for c, col in enumerate(cols, start=1):
                m = np.full((self.n_layers or int(part["layer"].max()) + 1, self.n_heads or int(part["head"].max()) + 1), np.nan)
                m[part["layer"].to_numpy(), part["head"].to_numpy()] = part[col].to_numpy(dtype=float)
                fig.add_trace(go.Heatmap(z=m, colorscale="Viridis", showscale=False,
                                         hovertemplate=f"{col}: layer %{{y}}, head %{{x}}: %{{z:.3f}}<extra></extra>"), r, c)
        fig.update_xaxes(title_text="head")
        fig.update_yaxes(title_text="layer")
        fig.update_layout(title=f"Per head: merge A(y→s), retrieval ΣA(s_q→y), correct-label share — {self.model}",
                          width=1100, height=120 + 320 * max(1, len(datasets)))
        return fig

    def _fig_patching(self):
        import numpy as np
        import plotly.graph_objects as go
        from plotly.subplots import make_subplots


        df = self.patching
        z = df[df["site"].map(layer_glob) == PATCH_SITES["z"]] if df is not None else pd.DataFrame(columns=["dataset"])
        datasets = list(dict.fromkeys(z["dataset"])) if len(z) else []
        fig = make_subplots(rows=1, cols=max(1, len(datasets)),
                            subplot_titles=[f"{ds}: {PATCH_SITES['z']}" for ds in datasets] or ["no patching (patching_pairs = 0)"])
        lim = float(np.nanmax(np.abs(z["effect"].to_numpy(dtype=float)))) if len(z) and z["effect"].notna().any() else 1.0
        for col, ds in enumerate(datasets, start=1):
            part = z[z["dataset"] == ds]
            m = np.full((self.n_layers or int(part["layer"].max()) + 1, self.n_heads or int(part["head"].max()) + 1), np.nan)
            m[part["layer"].to_numpy(), part["head"].to_numpy()] = part["effect"].to_numpy(dtype=float)
            fig.add_trace(go.Heatmap(z=m, colorscale="RdBu", zmid=0, zmin=-lim, zmax=lim, showscale=col == 1,
                                     hovertemplate="layer %{y}, head %{x}: %{z:.3f}<extra></extra>"), 1, col)
        fig.update_xaxes(title_text="head")
        fig.update_yaxes(title_text="layer", autorange="reversed")
        fig.update_layout(title=f"Activation patching of each head's output (clean query → query of another label; "
                                f"1 = the clean logit difference restored) — {self.model}",
                          width=500 * max(1, len(datasets)) + 200, height=480)
        return fig

    def render_html(self, figs: dict[str, Any] | None = None) -> str:
        figs = figs or {name: self.figure(name) for name in FIGURES}
        parts = [figure_html(fig, name, full_html=False, include_plotlyjs="inline" if i == 0 else False)
                 for i, (name, fig) in enumerate(figs.items())]
        acc = self.tables["accuracy"]
        acc_html = acc.pivot_table(index="dataset", columns="k", values="accuracy").to_html(
            float_format=lambda x: f"{x:.3f}") if len(acc) else ""
        abl = self.tables["ablation"]
        abl_html = abl.to_html(index=False, float_format=lambda x: f"{x:.3f}") if len(abl) else ""
        settings = html.escape(dumps({"settings": self.settings, "versions": self.versions}, indent=1))
        return (f"<!doctype html><html><head><meta charset=utf-8><title>ICL circuit: {html.escape(self.model)}</title>"
                "<style>body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1300px}"
                "td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}table{border-collapse:collapse}</style>"
                f"</head><body><h1>ICL inference circuit — {html.escape(self.model)}</h1>"
                f"<h2>Accuracy by k</h2>{acc_html}{''.join(parts)}<h2>Ablations</h2>{abl_html}"
                f"<h2>Settings</h2><pre>{settings}</pre></body></html>")
