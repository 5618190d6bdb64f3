"""``neurons.parquet`` (the whole decode table) and a self-contained, searchable ``neurons.html``.

The page embeds the top tokens of every neuron as compact JSON (token strings once, then
indices and rounded log10 probabilities) and filters them in plain JavaScript, no external
assets. Each file is written atomically.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from interp.results.folders import OutputFolder, writing
from interp.results.protocol import write_json, write_table
from interp.results.reading import neurons
from interp.results.strict_json import dumps, finite

STYLE = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1200px;color:#222}
h1{font-size:1.5em}table{border-collapse:collapse;margin:.5em 0}
td,th{border:1px solid #ccc;padding:2px 6px;text-align:left;white-space:pre}
td.n,th.n{text-align:right}.p{color:#888;font-size:.8em;margin-left:.3em}.hit{background:#fff3b0}
.muted{color:#777}#bar{position:sticky;top:0;background:#fff;padding:.5em 0;border-bottom:1px solid #ddd}
"""

SCRIPT = """
const D = JSON.parse(document.getElementById('data').textContent);
const K = D.k, n = D.layer.length, low = D.tok.map(t => t.trim().toLowerCase());
const q = document.getElementById('q'), whole = document.getElementById('whole'),
      top1 = document.getElementById('top1'), lay = document.getElementById('layer'),
      body = document.getElementById('rows'), count = document.getElementById('count');
let shown = 200, rows = [];
const prob = i => Math.pow(10, -D.nlp[i] / 100);
function score(r, s) {  // best probability among matching tokens, -1 if none
  let best = -1;
  for (let j = 0; j < (top1.checked ? 1 : K); j++) {
    const t = low[D.tok_idx[r * K + j]];
    if (whole.checked ? t === s : t.includes(s)) best = Math.max(best, prob(r * K + j));
  }
  return best;
}
function filter() {
  const s = q.value.trim().toLowerCase(), l = lay.value;
  rows = [];
  for (let r = 0; r < n; r++) {
    if (l !== '' && D.layer[r] !== +l) continue;
    const sc = s ? score(r, s) : 0;
    if (sc >= 0) rows.push([r, sc]);
  }
  if (s) rows.sort((a, b) => b[1] - a[1]);
  shown = 200; render();
}
function render() {
  const s = q.value.trim().toLowerCase();
  body.textContent = '';
  for (const [r] of rows.slice(0, shown)) {
    const tr = body.insertRow();
    tr.insertCell().textContent = D.layer[r]; tr.insertCell().textContent = D.neuron[r];
    tr.cells[0].className = tr.cells[1].className = 'n';
    for (let j = 0; j < K; j++) {
      const td = tr.insertCell(), t = D.tok[D.tok_idx[r * K + j]];
      td.textContent = JSON.stringify(t);
      const p = document.createElement('span'); p.className = 'p';
      const pr = prob(r * K + j);
      p.textContent = pr >= 0.01 ? (100 * pr).toFixed(1) + '%' : pr.toExponential(1); td.appendChild(p);
      if (s && (whole.checked ? low[D.tok_idx[r * K + j]] === s : low[D.tok_idx[r * K + j]].includes(s))) td.className = 'hit';
    }
  }
  count.textContent = `${rows.length} of ${n} neurons match; showing ${Math.min(shown, rows.length)}`;
  document.getElementById('more').style.display = rows.length > shown ? '' : 'none';
}
document.getElementById('more').onclick = () => { shown += 500; render(); };
for (const el of [q, whole, top1, lay]) el.addEventListener('input', filter);
filter();
"""


def _payload(df: pd.DataFrame, k: int) -> tuple[dict, int]:
    table = df[df["rank"] <= k].sort_values(["layer", "neuron", "rank"])
    k = int(table["rank"].max())
    ids = table["token_id"].to_numpy()
    uniq, inverse = np.unique(ids, return_inverse=True)
    names = dict(zip(table["token_id"], table["token"], strict=False))
    heads = table[table["rank"] == 1]
    data = {
        "k": k,
        "layer": heads["layer"].astype(int).tolist(),
        "neuron": heads["neuron"].astype(int).tolist(),
        "tok": [names[int(i)] for i in uniq],
        "tok_idx": inverse.astype(int).tolist(),
        # -100 log10(p) as integers: three significant digits at a few bytes each, also for
        # the near-uniform probabilities raw weight vectors get (~1/vocab)
        "nlp": np.rint(-100 * np.log10(np.clip(table["prob"].to_numpy(np.float64), 1e-300, 1))).astype(int).tolist(),
    }
    if len(data["tok_idx"]) != k * len(data["layer"]):
        raise ValueError("every neuron needs the same number of top tokens")
    return data, k


def _common(df: pd.DataFrame, n: int = 30) -> str:
    counts = df[df["rank"] == 1]["token"].value_counts().head(n)
    cells = "".join(f"<tr><td>{html.escape(dumps(t))}</td><td class=n>{c}</td></tr>" for t, c in counts.items())
    return f"<table><tr><th>top token</th><th class=n>neurons</th></tr>{cells}</table>"


def html_page(df: pd.DataFrame, title: str, k: int = 5) -> str:
    """The searchable page for a ``decode`` table, top ``k`` tokens per neuron."""
    data, k = _payload(df, k)
    blob = dumps(data, ensure_ascii=False, separators=(",", ":")).replace("<", "\\u003c")
    a = df.attrs
    settings = ", ".join(f"{key}={a[key]}" for key in ("weights", "apply_input_ln", "apply_final_norm") if key in a)
    layers = sorted(set(data["layer"]))
    options = "".join(f"<option value={v}>{v}</option>" for v in layers)
    heads = "".join(f"<th>{j}</th>" for j in range(1, k + 1))
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>{STYLE}</style></head><body>
<h1>{html.escape(title)}</h1>
<p>{len(data['layer'])} neurons in {len(layers)} layers; each neuron's weight vector decoded through the LM head
(softmax over the whole vocabulary), top {k} tokens with probabilities. {html.escape(settings)}</p>
<details><summary>Most common top tokens</summary>{_common(df)}</details>
<div id="bar">token <input id="q" placeholder="e.g. dog" autofocus>
<label><input type="checkbox" id="whole"> whole token</label>
<label><input type="checkbox" id="top1"> top token only</label>
layer <select id="layer"><option value="">all</option>{options}</select>
<span id="count" class="muted"></span></div>
<table><thead><tr><th class=n>layer</th><th class=n>neuron</th>{heads}</tr></thead><tbody id="rows"></tbody></table>
<button id="more">show more</button>
<script type="application/json" id="data">{blob}</script>
<script>{SCRIPT}</script></body></html>
"""


def write_report(df: pd.DataFrame, out: str | Path | OutputFolder, title: str, k_html: int = 5, *,
                 force: bool = False) -> dict[str, Path]:
    """Write ``neurons.parquet`` (every row of ``df``) and ``neurons.html`` into ``out`` (a folder
    path or an open ``OutputFolder``); nothing else there is touched (see ``interp.results.folders``).

    Args:
        title: the page's title.
        k_html: top tokens per neuron shown on the page.
        force: write beside files interp did not write.

    Returns:
        A dict of the written paths by kind (``parquet``, ``html``).
    """
    with writing(out, force=force, kind="neurons") as dest:
        paths = {"parquet": write_table(dest, "neurons.parquet", df),
                 "html": dest.write_text("neurons.html", html_page(df, title, k_html))}
    return paths


@dataclass
class NeuronTable:
    """The result protocol (``interp.results.protocol.Result``) over a ``decode`` table: ``df`` (``layer, neuron,
    rank, token_id, token, prob``) with a page title; ``save`` writes ``neurons.parquet``, ``neurons.html``
    and ``neurons.json`` (title, page depth and the table's settings; the rows live in the parquet).

    >>> import tempfile
    >>> df = pd.DataFrame({"layer": [0, 0], "neuron": [3, 3], "rank": [1, 2], "token_id": [5, 6],
    ...                    "token": [" dog", " cat"], "prob": [0.5, 0.25]})
    >>> folder = NeuronTable(df, "tiny").save(tempfile.mkdtemp() + "/neurons")
    >>> NeuronTable.load(folder).df["token"].tolist()
    [' dog', ' cat']
    """

    df: pd.DataFrame
    title: str
    k_html: int = 5

    def to_dict(self) -> dict[str, Any]:
        """Title, page depth, the table's settings (``df.attrs``) and its rows (None for NaN)."""
        return finite({"title": self.title, "k_html": self.k_html, "settings": dict(self.df.attrs),
                       "rows": self.df.to_dict("records")})

    def save(self, folder: str | Path | OutputFolder, *, force: bool = False) -> Path:
        """Write ``neurons.parquet``, ``neurons.html`` and ``neurons.json`` into ``folder``."""
        with writing(folder, force=force, kind="neurons") as out:
            write_report(self.df, out, self.title, self.k_html)
            doc = self.to_dict()
            write_json(out, "neurons.json", {k: doc[k] for k in ("title", "k_html", "settings")})
        return out.path

    @classmethod
    def load(cls, folder: str | Path) -> NeuronTable:
        """Read a folder written by :meth:`save`."""

        df, meta = neurons(folder)  # checked: columns, types and ranges; the title and settings
        df.attrs = dict(meta.get("settings") or {})
        return cls(df, meta["title"], int(meta.get("k_html", 5)))

    def figures(self) -> dict[str, Any]:
        """``{"top_tokens": bar chart of the most common top-1 tokens}``."""
        import plotly.graph_objects as go

        counts = self.df[self.df["rank"] == 1]["token"].value_counts().head(30)
        fig = go.Figure(go.Bar(x=[repr(t) for t in counts.index], y=counts.to_numpy()))
        fig.update_layout(title=f"Most common top tokens — {self.title}", xaxis_title="top token",
                          yaxis_title="neurons")
        return {"top_tokens": fig}
