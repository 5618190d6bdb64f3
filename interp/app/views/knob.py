"""The knob: context vs prior answers, and the residual direction that switches between them.

The plots come from ``knob.json`` alone. With a model, a slider sets the projection of the
chosen layer's residual stream on ``direction.safetensors`` (``interp.probes.steer``) at the
prompt's last token and shows which answer the model then prefers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import streamlit as st

from interp.app import model_cache, report_files, ui
from interp.probes import knob_report


def _number(value: Any, spec: str) -> str:
    """``value`` formatted, or a dash where the report holds null (NaN when it was measured)."""
    return "—" if value is None or (isinstance(value, float) and np.isnan(value)) else format(value, spec)


def _summary(report: report_files.KnobReport) -> None:
    d = report.data
    c = st.columns(5)
    c[0].metric("accuracy, prior intent", _number(d["accuracy"].get("prior"), ".0%"))
    c[1].metric("accuracy, context intent", _number(d["accuracy"].get("context"), ".0%"))
    c[2].metric("flip rate, DAS", _number(d["flip_rate"].get("das"), ".0%"))
    c[3].metric("flip rate, diff. of means", _number(d["flip_rate"].get("diff_means"), ".0%"))
    c[4].metric("flip rate, random direction", _number(d["random_flip_rate"], ".0%"))
    st.caption(ui.display_text(f"{ui.md(d['model'])}: direction at `{report.site}`; localised layers {d['layers']}; "
                               f"correlation of an item's separation along the direction with its accuracy "
                               f"{_number(d['correlation'], '+.2f')}."))
    left, right = st.columns(2)
    left.plotly_chart(knob_report.sweep_figure(d), key="knob_sweep")  # the report's own figures
    right.plotly_chart(knob_report.patching_figure(d), key="knob_patching")


@ui.cached
def _direction(path: str, stamp: int, d_model: int, name: str) -> Any:
    return report_files.read_direction(Path(path), d_model, name)


def slider_range(sweep: pd.DataFrame, method: str) -> tuple[float, float, float]:
    """(low, high, start) for the slider: the swept values of ``method`` (all rows if it has none),
    starting at its midpoint (``k = 0``) when the report has ``k``."""
    part = sweep[sweep["method"] == method]
    part = part if len(part) else sweep
    values = part["value"].astype(float)
    if not len(values):
        return -10.0, 10.0, 0.0
    lo, hi = float(values.min()), float(values.max())
    if hi <= lo:
        lo, hi = lo - 1.0, hi + 1.0
    start = float(part.loc[part["k"] == 0, "value"].iloc[0]) if "k" in part and (part["k"] == 0).any() else (lo + hi) / 2
    return lo, hi, start


def _item(row: pd.Series) -> Any:
    from interp.probes.knob_task import KnobItem

    return KnobItem(subject="", prior=str(row["prior_answer"]), context_object=str(row["context_answer"]),
                    context=str(row["context"]), query=str(row["question"]))


def answer(logits: np.ndarray) -> tuple[str, float]:
    """Which of (prior, context) wins, and the context answer's share of the two-way softmax."""
    p = np.exp(logits - logits.max())
    p = p / p.sum()
    return ("context" if logits[1] > logits[0] else "prior"), float(p[1])


def _slider(spec: str, report: report_files.KnobReport) -> None:
    from interp.probes import steer
    from interp.probes.knob_task import choice_logits, prompt

    st.subheader("Turn the knob")
    model = model_cache.load(spec)
    ui.model_mismatch(report.data["model"], model)
    names = report_files.direction_names(report.direction_path)
    name = st.selectbox("Direction", names, key="knob_direction",
                        help="`direction` is the knob's own (DAS); other tensors in the file are baselines.")
    u = _direction(str(report.direction_path), report.direction_path.stat().st_mtime_ns, model.cfg.d_model, name)
    model.check_layer(int(report.data["layer"]))
    items = report.items
    i = st.selectbox("Item", range(len(items)), key="knob_item",
                     format_func=lambda j: f"{items.iloc[j]['context']} — {items.iloc[j]['question']}")
    intent = st.radio("Instruction in the prompt", ["context", "prior"], horizontal=True, key="knob_intent")
    method = {"direction": "das", "diff_means": "diff_means"}.get(name, "random" if name.startswith("random") else name)
    lo, hi, start = slider_range(report.sweep, method)
    value = st.slider("Projection value along the direction", lo, hi, start, step=(hi - lo) / 100,
                      key=f"knob_value_{name}")
    item = _item(items.iloc[i])
    site = report.site
    with st.spinner("Running the model…"), model_cache.using(spec) as m:
        text = prompt(m, item, intent)  # type: ignore[arg-type]
        base = choice_logits(m, [item], intent)[0]  # type: ignore[arg-type]
        steered = choice_logits(m, [item], intent, interventions={site: steer(u, value=value)})[0]  # type: ignore[arg-type]
        reading = float(_projection(m, text, site, u))
        plain = m.generate(text, 12)[0]
        out = m.generate(text, 12, interventions={site: steer(u, value=value)})[0]
    st.caption(f"The prompt's own projection at `{site}` (last token) is {reading:.2f}.")
    c1, c2 = st.columns(2)
    for col, title, logits in ((c1, "Without steering", base), (c2, f"Projection set to {value:.2f}", steered)):
        which, share = answer(logits)
        word = item.context_object if which == "context" else item.prior
        col.markdown(f"**{title}**")
        col.metric("answer", f"{word} ({which})", help="the larger logit of the two answers' first tokens")
        col.progress(share, text=f"context {share:.0%} · prior {1 - share:.0%}")
    st.markdown(f"Generation without steering: {ui.md(plain.strip())}")
    st.markdown(f"Steered generation: {ui.md(out.strip())}")


def _projection(model: Any, text: str, site: str, u: Any) -> float:
    from interp.probes import projection

    with model.trace(text, sites=[site]) as tr:
        pass
    return float(projection(tr[site][0, -1], u))


def page() -> None:
    st.title("Knob: context vs prior")
    report = ui.pick_report("knob")
    if report is None:
        return
    data = None
    with ui.shown_errors("Knob report"):
        loaded = ui.read(report)
        _summary(loaded)
        with st.expander(f"{len(loaded.items)} items"):
            st.dataframe(loaded.items, hide_index=True)
        data = loaded
    if data is None:
        return
    spec = ui.need_model("The knob slider")
    if spec is not None:
        with ui.shown_errors("Knob slider"):
            _slider(spec, data)


if __name__ == "__main__":
    page()
