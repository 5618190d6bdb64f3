"""Plotly figures and small HTML views the pages draw (pure functions of tables and arrays)."""

from __future__ import annotations

import html
from collections.abc import Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go


def token_label(text: str) -> str:
    """A token as it can be seen: spaces as ·, newlines as ↵, tabs as →."""
    return text.replace(" ", "·").replace("\n", "↵").replace("\t", "→") or "∅"


def attention_html(tokens: Sequence[str], weights: np.ndarray, query: int) -> str:
    """Tokens as inline spans shaded by the attention ``weights`` the ``query`` position gives them.

    The query token is outlined; tokens after it (masked) are greyed out; each span's tooltip
    gives its position and weight.
    """
    top = float(np.max(weights)) if len(weights) else 0.0
    spans = []
    for i, tok in enumerate(tokens):
        w = float(weights[i]) if i < len(weights) else 0.0
        alpha = 0.0 if top <= 0 else w / top
        style = f"background:rgba(220,60,30,{alpha:.3f});padding:1px 2px;margin:1px;border-radius:3px;"
        if i == query:
            style += "outline:2px solid #1f77b4;"
        if i > query:
            style += "color:#bbb;"
        title = f"position {i}: {w:.4f}"
        spans.append(f'<span title="{title}" style="{style}">{html.escape(token_label(tok))}</span>')
    return f'<div style="line-height:2;font-family:monospace;font-size:0.95em">{"".join(spans)}</div>'


def attention_heatmap(probs: np.ndarray, tokens: Sequence[str], rows: Sequence[int], title: str) -> go.Figure:
    """Query rows (only those computed) × keys heatmap of attention probabilities."""
    keys = [f"{i}:{token_label(t)}" for i, t in enumerate(tokens)]
    ys = [f"{r}:{token_label(tokens[r])}" for r in rows]
    fig = go.Figure(go.Heatmap(z=probs, x=keys, y=ys, colorscale="Reds", zmin=0, zmax=1,
                               hovertemplate="query %{y}<br>key %{x}<br>p=%{z:.4f}<extra></extra>"))
    fig.update_layout(title=title, xaxis_title="key", yaxis_title="query", yaxis={"autorange": "reversed"},
                      height=180 + 22 * len(rows), margin={"t": 40})
    return fig


def patching_heatmap(df: pd.DataFrame, x: str, title: str, labels: dict | None = None) -> go.Figure:
    """Layer × ``x`` (position or head) heatmap of patching effects, centred on zero; ``labels`` name the columns."""
    table = df.pivot_table(index="layer", columns=x, values="effect", aggfunc="mean").sort_index()
    lim = float(np.nanmax(np.abs(table.to_numpy()))) if table.size else 1.0
    names = [(labels or {}).get(c, str(c)) for c in table.columns]
    fig = go.Figure(go.Heatmap(z=table.to_numpy(), x=names, y=table.index.tolist(),
                               colorscale="RdBu", zmid=0, zmin=-lim, zmax=lim,
                               hovertemplate=f"layer %{{y}}, {x} %{{x}}: %{{z:.4f}}<extra></extra>"))
    fig.update_layout(title=title, xaxis_title=x, yaxis_title="layer", yaxis={"autorange": "reversed"},
                      height=160 + 16 * max(len(table.index), 4))
    return fig
