"""Head-score reports: ``head_scores.parquet``, ``head_scores.json`` and a self-contained ``report.html``.

Written through ``interp.results.folders``: the files land together when the report is complete, and
nothing else in the folder is touched.
"""

from __future__ import annotations

import html
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from interp.core.sites import head_label
from interp.results.folders import OutputFolder, writing
from interp.results.protocol import figure_html, write_json, write_table
from interp.results.strict_json import dumps

if TYPE_CHECKING:
    from interp.heads.table import HeadScores

STYLE = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222}
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:2em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}
.grid{display:flex;flex-wrap:wrap;gap:1em}.muted{color:#777}pre{background:#f6f6f6;padding:.5em;overflow-x:auto}
"""


def _table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "<p class=muted>none</p>"
    cols = list(rows[0])
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in cols)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(f'{r[c]:.3f}' if isinstance(r[c], float) else str(r[c]))}</td>" for c in cols) + "</tr>"
        for r in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _e(value: Any) -> str:
    """Any value as page text, escaped: every string that reaches the page goes through here or
    ``_table`` (a report read back from a crafted file may hold markup anywhere)."""
    return html.escape(str(value))


def _heads(heads: list[dict[str, int]]) -> str:
    return _e(", ".join(head_label(h["layer"], h["head"]) for h in heads))


def _checks_html(checks: dict[str, Any]) -> str:
    parts = []
    ind = checks.get("induction_ablation")
    if ind:
        rows = [{"heads ablated": f"top {ind['k']} induction", "loss (nats)": ind["top_ablated_loss"]}]
        rows += [{"heads ablated": f"{ind['k']} random (seed {s})", "loss (nats)": v} for s, v in ind["random_ablated_loss"].items()]
        rows.insert(0, {"heads ablated": "none", "loss (nats)": ind["clean_loss"]})
        parts.append(
            "<h3>Induction: mean-ablation, loss on the second copy of repeated random tokens</h3>"
            f"<p>length {_e(ind['length'])}, {_e(ind['samples'])} sequences (seed {_e(ind['seed'])}); top heads: "
            f"{_heads(ind['top_heads'])}</p>" + _table(rows)
        )
    ret = checks.get("retrieval_masking")
    if ret and "recall" in ret:
        rows = [{"queries zeroed while decoding": name, "needle recall (ROUGE-1)": v} for name, v in ret["recall"].items()]
        parts.append(
            f"<h3>Retrieval: masking the top {_e(ret['k'])} retrieval heads vs random heads</h3>"
            f"<p>top heads: {_heads(ret['top_heads'])}</p>" + _table(rows)
        )
    elif ret:
        parts.append(f"<h3>Retrieval masking</h3><p>{_e(ret.get('skipped'))}</p>")
    tests = checks.get("retrieval_tests")
    if tests:
        parts.append(
            f"<h3>Needle tests</h3><p>{_e(tests['recalled'])} of {_e(tests['tests'])} recalled (ROUGE-1 recall &gt; "
            f"{_e(tests.get('recall_threshold', 0.5))}); share of heads above {_e(tests.get('threshold', 0.1))}: "
            f"{_e(tests['share_above_threshold'])}</p>"
            + _table([{k: t[k] for k in ("needle", "length", "depth", "recall", "response")} for t in tests["per_test"]])
        )
    return "".join(parts) or "<p class=muted>no causal checks were run</p>"


def render_html(scores: HeadScores) -> str:
    figures = []
    for i, name in enumerate(scores.scores):
        fig = scores.heatmap(name)  # a fixed div id per score: the page is the same bytes for the same scores
        figures.append(figure_html(fig, f"heatmap-{name}", full_html=False, include_plotlyjs="inline" if i == 0 else False))
    tops = "".join(
        f"<div><h3>{html.escape(name)}</h3>{_table(scores.top(name, 10).to_dict('records'))}</div>" for name in scores.scores
    )
    settings = html.escape(dumps({"settings": scores.settings, "versions": scores.versions}, indent=1))
    return (
        f"<!doctype html><html><head><meta charset=utf-8><title>Head scores: {html.escape(scores.model)}</title>"
        f"<style>{STYLE}</style></head><body><h1>Head scores — {html.escape(scores.model)}</h1>"
        f"<p>{_e(scores.n_layers)} layers × {_e(scores.n_heads)} heads</p>"
        f"<h2>Heatmaps</h2><div class=grid>{''.join(figures)}</div>"
        f"<h2>Top heads</h2><div class=grid>{tops}</div>"
        f"<h2>Causal checks</h2>{_checks_html(scores.checks)}"
        f"<h2>Settings</h2><pre>{settings}</pre></body></html>"
    )


def write_report(scores: HeadScores, dest: str | os.PathLike[str] | OutputFolder, *, force: bool = False) -> Path:
    """Write ``head_scores.parquet``, ``head_scores.json`` and ``report.html`` into ``dest``
    (a folder path, or an open ``OutputFolder``); other files there are left alone."""
    with writing(dest, force=force, kind="heads") as out:
        write_table(out, "head_scores.parquet", scores.df)
        write_json(out, "head_scores.json", scores.to_dict())
        out.write_text("report.html", render_html(scores))
    return out.path


def write_index(folders: dict[str, Path], out: OutputFolder) -> Path:
    """An index page linking the reports of several models (subfolders of ``out``)."""
    items = "".join(
        f"<li><a href='{html.escape(p.name)}/report.html'>{html.escape(name)}</a></li>" for name, p in folders.items()
    )
    return out.write_text("index.html", f"<!doctype html><html><head><meta charset=utf-8><title>Head scores</title>"
                          f"<style>{STYLE}</style></head><body><h1>Head scores</h1><ul>{items}</ul></body></html>")
