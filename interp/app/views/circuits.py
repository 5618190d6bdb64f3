"""Circuits: the in-context-learning circuit's steps, its ablation table and patching heatmaps.

The ICL views are read from ``icl.json`` and ``patching.parquet`` (no model needed). With a
model, ``Run patching`` patches a clean prompt into a corrupted one live
(``interp.circuits.activation_patching``), one layer at a time so progress shows.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from interp.app import figures, model_cache, report_files, ui
from interp.core.sites import as_glob, layer_glob
from interp.errors import InterpError

CLEAN = "When Mary and John went to the store, John gave a drink to"
CORRUPTED = "When Mary and John went to the store, Mary gave a drink to"


def _steps(result, dataset: str) -> None:
    """The report's own figures: accuracy by demonstrations, and the three steps by layer."""
    st.plotly_chart(result.figure("accuracy"), key="acc")
    st.plotly_chart(result.figure("steps", dataset), key="steps")
    st.markdown("**Heads**")
    heads = result.only(dataset).tables["heads"].drop(columns="dataset")
    st.dataframe(heads.sort_values(["merge", "retrieval"], ascending=False, kind="stable"), hide_index=True, height=260,
                 key="icl_heads", column_config={c: st.column_config.NumberColumn(format="%.3f") for c in ("merge", "retrieval")})


def _ablation(result, dataset: str) -> None:
    st.plotly_chart(result.figure("ablation", dataset), key="ablation_plot")
    st.dataframe(result.only(dataset).tables["ablation"].drop(columns="dataset"), hide_index=True,
                 key="ablation", column_config={c: st.column_config.NumberColumn(format="%.3f")
                                                for c in ("accuracy", "baseline_accuracy", "drop")})
    st.caption("Random rows knock out as many random edges in the same layers: the control a step's drop must beat.")


PATCHING_NOTE = ("Effect 1: the patch restores the clean run's logit difference; 0: no change. Head −1: the whole "
                 "layer; position −1: every position patched at once.")


def _position_labels(part: pd.DataFrame) -> dict | None:
    """Position -> "position token" when the file names each position's token (``interp icl`` does)."""
    if "token" not in part.columns:
        return None
    rows = part[part["position"] >= 0].drop_duplicates("position")
    return {p: f"{p} {figures.token_label(str(t))}" for p, t in zip(rows["position"], rows["token"], strict=True)}


def _patching(df: pd.DataFrame, dataset: str, about: dict | None = None) -> None:
    if "dataset" in df.columns:  # interp icl writes every dataset's rows into one file
        df = df[df["dataset"].astype(str) == dataset]
        if df.empty:
            st.info(f"patching.parquet has no rows for {ui.md(dataset)}.")
            return
    if about:
        def num(key: str) -> str:
            v = about.get(key)
            return f"{v:.3f}" if isinstance(v, (int, float)) else "n/a"

        st.caption(f"{ui.md(about.get('pairs', '?'))} pairs: the same demonstrations, then a query of one label (clean) or "
                   f"of another label with as many tokens (corrupted); metric: logit(clean label) − logit(corrupted "
                   f"label) at the last token, clean {num('clean_logit_diff')}, corrupted {num('corrupted_logit_diff')}. "
                   + PATCHING_NOTE)
    else:
        st.caption(PATCHING_NOTE)
    kinds = df["site"].astype(str).map(layer_glob)  # a site in every layer
    site = st.selectbox("Site", sorted(kinds.unique()), key="patch_site")
    part = df[kinds == site]
    labels = _position_labels(part)
    heads = sorted(part["head"].dropna().unique().tolist())
    by_position = sorted(part["position"].dropna().unique().tolist()) != [-1]  # else all positions at once only
    if len(heads) > 1:
        if by_position:
            head = st.selectbox("Head (or all heads, averaged)", ["all", *heads], key="patch_head")
            by_pos = part if head == "all" else part[part["head"] == head]
            st.plotly_chart(figures.patching_heatmap(by_pos, "position", f"{site}: effect by layer and position"
                                                     + ("" if head == "all" else f", head {head}"), labels),
                            key="patch_pos")
            positions = sorted(part["position"].unique().tolist())
            pos = st.selectbox("Position (or all positions, averaged)", ["all", *positions], key="patch_position")
            by_head = part if pos == "all" else part[part["position"] == pos]
            title = f"{site}: effect by layer and head"
        else:
            by_head, title = part, f"{site}: effect by layer and head (all positions patched at once)"
        st.plotly_chart(figures.patching_heatmap(by_head, "head", title), key="patch_head_map")
    else:
        st.plotly_chart(figures.patching_heatmap(part, "position", f"{site}: effect by layer and position", labels),
                        key="patch_pos")


def _answer_id(model, word: str, prompt: str) -> int:
    from interp.probes.knob_task import first_token

    if not word.strip():
        raise InterpError("give both answers, e.g. ' Mary' (right after the clean prompt) and ' John'")
    return first_token(model, word, prompt)


def live_patching(spec: str) -> None:
    """Patch a clean prompt's activations into a corrupted one, per layer (and head) and position."""
    from interp.circuits import activation_patching, logit_diff
    from interp.circuits.patching import SITES

    st.caption("Effect 1: the patch restores the clean run's logit difference (good − bad answer); 0: no change.")
    c1, c2 = st.columns(2)
    clean = c1.text_input("Clean prompt", CLEAN, key="patch_clean")
    corrupted = c2.text_input("Corrupted prompt (same number of tokens)", CORRUPTED, key="patch_corrupted")
    c3, c4 = st.columns(2)
    good = c3.text_input("Good answer (clean)", " Mary", key="patch_good")
    bad = c4.text_input("Bad answer (corrupted)", " John", key="patch_bad")
    c5, c6 = st.columns(2)
    sites = c5.multiselect("Sites", [as_glob(t) for t in SITES], default=["blocks.*.hook_resid_pre"],
                           key="patch_sites", help="Head sites (hook_z, _q, _k, _v, _result) patch each head: slower.")
    positions = c6.radio("Positions", ["each", "all"], horizontal=True, key="patch_positions",
                         help="each: one position at a time; all: the whole sequence at once")
    if st.button("Run patching", key="run_patching", disabled=not sites):
        with model_cache.using(spec) as model:
            metric = logit_diff(_answer_id(model, good, clean), _answer_id(model, bad, corrupted))
            with ui.progress_bar("patching"):
                st.session_state["patching_result"] = activation_patching(
                    model, clean, corrupted, metric, sites=sites, positions=positions, progress=False)
    result = st.session_state.get("patching_result")
    if result is not None:
        st.caption(f"logit difference: clean {result.clean_metric:.3f}, corrupted {result.corrupted_metric:.3f}")
        for site in dict.fromkeys(result.df["site"].map(layer_glob)):
            st.plotly_chart(result.heatmap(site), key=f"live_patch_{site}")


def page() -> None:
    st.title("Circuits: in-context learning")
    report = ui.pick_report("circuits")
    if report is not None:
        _report(report)
    st.subheader("Activation patching on your prompts")
    spec = ui.need_model("Live patching")
    if spec is not None:
        with ui.shown_errors("Patching"):
            live_patching(spec)


def _report(report: report_files.Report) -> None:
    with ui.shown_errors("Circuits report"):
        data: report_files.CircuitsReport = ui.read(report)
        tables = data.tables
        datasets = sorted(set().union(*(set(df["dataset"].astype(str)) for df in tables.values())))
        if not datasets:
            raise report_files.ReportError(f"{ui.display_path(report.folder / 'icl.json')} has no rows for any dataset")
        st.caption(ui.md(ui.display_text(f"{data.data['model']}; settings: {data.data.get('settings', {})}")))
        dataset = st.selectbox("Dataset", datasets, key="icl_dataset")
        steps, ablation, patching = st.tabs(["Steps", "Ablation", "Patching"])
        result = data.result()
        with steps:
            _steps(result, dataset)
        with ablation:
            _ablation(result, dataset)
        with patching:
            if data.patching is None:
                st.info(f"No patching.parquet in `{ui.display_path(report.folder)}`.")
            else:
                about = data.data.get("patching")
                summaries = about.get("datasets", {}) if isinstance(about, dict) else {}
                _patching(data.patching, dataset, summaries.get(dataset))


if __name__ == "__main__":
    page()
