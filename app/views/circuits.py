"""Circuits: the in-context-learning circuit's steps, its ablation table and patching heatmaps.

Everything here is read from ``icl.json`` and ``patching.parquet``; no model is needed.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from interp.app import figures, report_files, ui


def _steps(tables: dict[str, pd.DataFrame], dataset: str) -> None:
    t = {name: df[df["dataset"] == dataset] for name, df in tables.items()}
    c1, c2 = st.columns(2)
    c1.plotly_chart(figures.lines(tables["accuracy"], "k", "accuracy", "dataset", "ICL accuracy by shots"),
                    key="acc")
    c2.plotly_chart(figures.lines(t["summarize"].assign(step="summarize"), "layer", "alignment", "step",
                                  f"Summarize: label alignment by layer — {dataset}"), key="summarize")
    c3, c4 = st.columns(2)
    merge = t["merge"].melt(id_vars=["layer"], value_vars=["heads_above", "mean_score"], var_name="measure")
    c3.plotly_chart(figures.lines(merge, "layer", "value", "measure", f"Merge heads by layer — {dataset}"), key="merge")
    retrieval = t["retrieval"].melt(id_vars=["layer"], value_vars=["induction_heads", "correct_induction_heads"],
                                    var_name="measure")
    c4.plotly_chart(figures.lines(retrieval, "layer", "value", "measure", f"Retrieval by layer — {dataset}",
                                  "heads"), key="retrieval")
    st.markdown("**Heads**")
    heads = t["heads"].drop(columns="dataset").sort_values(["merge", "retrieval"], ascending=False, kind="stable")
    st.dataframe(heads, hide_index=True, height=260, key="icl_heads",
                 column_config={c: st.column_config.NumberColumn(format="%.3f") for c in ("merge", "retrieval")})


def _ablation(ablation: pd.DataFrame, dataset: str) -> None:
    st.plotly_chart(figures.ablation_bars(ablation, dataset), key="ablation_plot")
    st.dataframe(ablation[ablation["dataset"] == dataset].drop(columns="dataset"), hide_index=True, key="ablation",
                 column_config={c: st.column_config.NumberColumn(format="%.3f")
                                for c in ("accuracy", "baseline_accuracy", "drop")})
    st.caption("Random rows ablate as many edges in random layers: the control a step's drop must beat.")


def _patching(df: pd.DataFrame) -> None:
    sites = sorted(df["site"].astype(str).unique())
    site = st.selectbox("Site", sites, key="patch_site")
    part = df[df["site"].astype(str) == site]
    heads = sorted(part["head"].dropna().unique().tolist())
    if len(heads) > 1:
        head = st.selectbox("Head (or all heads, averaged)", ["all", *heads], key="patch_head")
        by_pos = part if head == "all" else part[part["head"] == head]
        st.plotly_chart(figures.patching_heatmap(by_pos, "position", f"{site}: effect by layer and position"
                                                 + ("" if head == "all" else f", head {head}")), key="patch_pos")
        positions = sorted(part["position"].unique().tolist())
        pos = st.selectbox("Position (or all positions, averaged)", ["all", *positions], key="patch_position")
        by_head = part if pos == "all" else part[part["position"] == pos]
        st.plotly_chart(figures.patching_heatmap(by_head, "head", f"{site}: effect by layer and head"), key="patch_head_map")
    else:
        st.plotly_chart(figures.patching_heatmap(part, "position", f"{site}: effect by layer and position"),
                        key="patch_pos")


def page() -> None:
    st.title("Circuits: in-context learning")
    report = ui.pick_report("circuits")
    if report is None:
        return
    with ui.shown_errors("Circuits report"):
        data: report_files.CircuitsReport = ui.read(report)
        tables = data.tables
        datasets = sorted(set().union(*(set(df["dataset"].astype(str)) for df in tables.values())))
        if not datasets:
            raise report_files.ReportError(f"{report.folder / 'icl.json'} has no rows for any dataset")
        st.caption(f"{data.data['model']}; settings: {data.data.get('settings', {})}")
        dataset = st.selectbox("Dataset", datasets, key="icl_dataset")
        steps, ablation, patching = st.tabs(["Steps", "Ablation", "Patching"])
        with steps:
            _steps(tables, dataset)
        with ablation:
            _ablation(tables["ablation"], dataset)
        with patching:
            if data.patching is None:
                st.info(f"No patching.parquet in {report.folder}.")
            else:
                _patching(data.patching)


if __name__ == "__main__":
    page()
