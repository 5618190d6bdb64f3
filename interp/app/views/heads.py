"""Head scores: heatmaps per score, a sortable table of heads, and one head's attention on a prompt.

The attention view traces only the chosen layer's q and k and recomputes softmax rows for the
chosen query positions (``interp.attention_pattern``), so the model keeps its fast attention
and a long prompt costs one forward pass plus a few rows.

A report that is one model of a sweep (``interp heads A B --out DIR`` writes ``DIR/heads.parquet``)
can be shown side by side with another model of the same sweep. A report that is one checkpoint of a timeline (``interp heads 'run/checkpoint-*' --out DIR``) gets
a step slider over the run's checkpoints and the timeline figure with the chosen step marked.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from interp.app import figures, model_cache, ui
from interp.core.sites import head_label
from interp.errors import InterpError

DEFAULT_PROMPT = ("Mr and Mrs Dursley, of number four, Privet Drive, were proud to say that they were perfectly "
                  "normal. Mr and Mrs Dursley, of number four, Privet Drive, were proud to say")
QUICK = {"lengths": (25, 50), "samples": 4, "text_tokens": 256, "text_samples": 2}
MAX_ROWS = 12  # query rows drawn token by token


def _quick_scan(spec: str) -> Any:
    """A small scan of the picked model, with a progress bar."""
    from interp.heads.head_scan import PATTERN_SCORES, scan

    chosen = st.multiselect("Scores", list(PATTERN_SCORES), default=["prev_token", "induction"], key="scan_scores",
                            help="Retrieval needs 1-2k token haystacks and generation: run `interp heads` for it.")
    st.caption(f"Quick settings {QUICK}, no causal checks. `interp heads` runs the full protocol.")
    if st.button("Run scan", key="run_scan", disabled=not chosen):
        with ui.progress_bar(), model_cache.using(spec) as model:
            st.session_state["scan_result"] = scan(model, chosen, causal_checks=False, progress=False,
                                                   **QUICK)  # type: ignore[arg-type]
    return st.session_state.get("scan_result")


@st.cache_resource(show_spinner=False, max_entries=8)
def _read_timeline(folder: str, stamp: int) -> Any:
    from interp.heads.timeline import Timeline

    return Timeline.load(folder)


def _timeline_step(report: Any) -> tuple[Any, Any, int | None]:
    """For a report that is one checkpoint of a timeline: a slider over the run's steps, starting at
    the report's own; returns the report at the chosen step, the timeline and the step."""
    from interp.app.report_files import Report
    from interp.heads.timeline import find_timeline
    from interp.results.reading import TIMELINE_META

    root = find_timeline(report.folder)
    if root is None:
        return report, None, None
    try:
        timeline = _read_timeline(str(root), (root / TIMELINE_META).stat().st_mtime_ns)
    except (InterpError, OSError) as exc:  # the checkpoint's own report still shows
        st.warning(ui.md(ui.display_text(f"Timeline: {exc}")))
        return report, None, None
    own = next(int(c["step"]) for c in timeline.checkpoints if str(c["folder"]) == report.folder.name)
    if st.session_state.get("_timeline_report") != str(report.folder):  # another report picked: start at its step
        st.session_state["_timeline_report"] = str(report.folder)
        st.session_state["timeline_step"] = own
    step = st.select_slider("Training step", options=timeline.steps, key="timeline_step",
                            help=f"{len(timeline.steps)} checkpoints of this run; heatmaps and table show the "
                                 "chosen one's report")
    folder = root / timeline.folder_of(step)
    return Report("heads", folder, f"{folder.name}  (step {step})"), timeline, int(step)


def _timeline_figure(timeline: Any, step: int) -> None:
    shown = [s for s in timeline.figure_scores if s in timeline.scores] or timeline.scores[:1]
    with st.expander("Scores against training step", expanded=True):
        chosen = st.multiselect("Timeline scores", timeline.scores, default=shown, key="timeline_scores")
        if chosen:
            st.plotly_chart(timeline.figure(chosen, step=step), key="timeline_figure")


@st.cache_resource(show_spinner=False, max_entries=8)
def _read_sweep(path: str, stamp: int) -> pd.DataFrame:
    from interp.results.reading import sweep_table

    return sweep_table(path)  # parquet, never pickle; checked (types, indices, sizes)


def _sweep_comparison(folder: Any, scores: Any) -> None:
    """For a report that is one model of a sweep (a ``heads.parquet`` beside its folder): its
    heatmap of a score next to another model's of the same sweep."""
    from interp.heads import HeadScores

    path = folder.parent / "heads.parquet"
    if not path.is_file():
        return
    table = _read_sweep(str(path), path.stat().st_mtime_ns)
    others = [m for m in dict.fromkeys(table["model"]) if m != scores.model]
    if not others:
        return
    with st.expander(f"Side by side with another model of this sweep ({len(others) + 1} models)", expanded=False):
        c1, c2 = st.columns(2)
        other = c1.selectbox("Other model", others, key="compare_model")
        part = table[table["model"] == other]
        common = [s for s in scores.scores if s in set(part["score"])]
        if not common:
            st.info(f"{ui.md(other)} has none of this report's scores.")
            return
        score = c2.selectbox("Score", common, key="compare_score")
        theirs = HeadScores(part, model=other, n_layers=int(part["layer"].max()) + 1,
                            n_heads=int(part["head"].max()) + 1)
        left, right = st.columns(2)
        left.plotly_chart(scores.heatmap(score), key="compare_left")
        right.plotly_chart(theirs.heatmap(score), key="compare_right")


def _heatmaps(scores: Any) -> None:
    base = [s for s in scores.scores if not s.endswith("_text") and not s[-1].isdigit()]
    if st.session_state.get("_heatmaps_for") != scores.scores:  # another report: start from its main scores
        st.session_state["_heatmaps_for"] = scores.scores
        st.session_state["heatmap_scores"] = base[:4] or scores.scores[:1]
    shown = st.multiselect("Heatmaps", scores.scores, key="heatmap_scores")
    cols = st.columns(2)
    for i, score in enumerate(shown):
        with cols[i % 2]:
            st.plotly_chart(scores.heatmap(score), key=f"heatmap_{score}")


def _table(scores: Any) -> tuple[int, int] | None:
    """The heads sorted by a score; a selected row picks the head."""
    by = st.selectbox("Sort heads by", scores.scores, index=scores.scores.index("induction")
                      if "induction" in scores.scores else 0, key="sort_by")
    wide = scores.wide().reset_index().sort_values(by, ascending=False, kind="stable").reset_index(drop=True)
    if wide.empty:
        st.info("Every score of this report is missing (null) for every head: there is no head to pick.")
        return None
    event = st.dataframe(wide, hide_index=True, height=300, on_select="rerun", selection_mode="single-row",
                         key="heads_table", column_config={s: st.column_config.NumberColumn(format="%.3f")
                                                           for s in scores.scores})
    rows = event.selection.rows if event is not None and hasattr(event, "selection") else []
    if rows:
        row = wide.iloc[rows[0]]
        return int(row["layer"]), int(row["head"])
    return int(wide.loc[0, "layer"]), int(wide.loc[0, "head"])


def _tokens(model: Any, ids: list[int]) -> list[str]:
    return [model.tokenizer.decode([i]) for i in ids]


@ui.cached
def _trace(spec: str, prompt: str, layer: int) -> tuple[Any, list[int]]:
    """One forward pass capturing the layer's q and k (kept for other heads and rows)."""
    with model_cache.using(spec) as model:
        sites = [f"blocks.{layer}.attn.hook_q", f"blocks.{layer}.attn.hook_k"]
        with model.trace(prompt, sites=sites) as tr:
            pass
    return tr, [int(i) for i in tr.input_ids[0].tolist()]


def _attention(spec: str, scores: Any, pick: tuple[int, int]) -> None:
    import interp

    st.subheader("Attention of one head on your prompt")
    model = model_cache.load(spec)
    ui.model_mismatch(scores.model, model)
    c1, c2 = st.columns(2)
    # The table's selection seeds the inputs; typing in them overrides it.
    if st.session_state.get("_picked") != pick:
        st.session_state["_picked"] = pick
        st.session_state["layer"], st.session_state["head"] = pick
    layer = c1.number_input("Layer", min_value=0, step=1, key="layer")
    head = c2.number_input("Head", min_value=0, step=1, key="head")
    prompt = st.text_area("Prompt", DEFAULT_PROMPT, key="prompt", height=90)
    if not prompt.strip():
        st.error("Type a prompt to see the head's attention on it.")
        return
    model.check_layer(int(layer))
    model.check_heads([int(head)])
    with st.spinner("Running the model…"):
        tr, ids = _trace(spec, prompt, int(layer))
    tokens = _tokens(model, ids)
    n = len(ids)
    labels = [f"{i}: {figures.token_label(t)}" for i, t in enumerate(tokens)]
    if st.session_state.get("_rows_for") != ids:  # a new prompt starts again from its last token
        st.session_state["_rows_for"] = ids
        st.session_state["rows"] = [n - 1]
    rows = st.multiselect(f"Query tokens (at most {MAX_ROWS}; only these rows are computed)", range(n),
                          format_func=lambda i: labels[i], max_selections=MAX_ROWS, key="rows")
    if not rows:
        st.info("Pick at least one query token.")
        return
    rows = sorted(rows)
    probs = interp.attention_pattern(tr, int(layer), heads=[int(head)], rows=rows)[0, 0].numpy()  # [rows, keys]
    st.caption(f"{n} tokens; {len(rows)} of {n} rows computed. Shade: attention weight (darkest = the row's maximum).")
    for r, weights in zip(rows, probs, strict=True):
        top = int(weights.argmax())
        st.markdown(f"**{ui.md(labels[r])}** attends most to {ui.md(labels[top])} ({weights[top]:.3f})")
        st.html(figures.attention_html(tokens, weights, r))
    if len(rows) > 1:
        st.plotly_chart(figures.attention_heatmap(probs, tokens, rows, head_label(layer, head)), key="attn_heatmap")


def page() -> None:
    st.title("Head scores")
    spec = ui.model_spec()
    sources = ["Saved report"] + (["Quick scan of the picked model"] if spec else [])
    source = st.radio("Source", sources, horizontal=True, key="heads_source")
    scores, timeline, step, report = None, None, None, None
    with ui.shown_errors("Head scores"):
        if source == "Saved report":
            report = ui.pick_report("heads")
            if report is not None:
                report, timeline, step = _timeline_step(report)
            scores = ui.read(report) if report is not None else None
        else:
            assert spec is not None
            scores = _quick_scan(spec)
    if scores is None:
        return
    at_step = "" if step is None or timeline is None else f" at step {step} ({len(timeline.steps)} checkpoints)"
    st.caption(ui.md(ui.display_text(f"{scores.model}{at_step}: {scores.n_layers} layers × {scores.n_heads} heads; "
                                     f"scores: {', '.join(scores.scores)}")))
    if timeline is not None and step is not None:
        with ui.shown_errors("Timeline"):
            _timeline_figure(timeline, step)
    if source == "Saved report" and report is not None:
        with ui.shown_errors("Sweep"):
            _sweep_comparison(report.folder, scores)
    _heatmaps(scores)
    st.subheader("Heads")
    pick = _table(scores)
    if pick is None:
        return
    spec = ui.need_model("The attention view")
    if spec is not None:
        with ui.shown_errors("Attention view"):
            _attention(spec, scores, pick)


if __name__ == "__main__":
    page()
