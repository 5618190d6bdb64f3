"""Neurons: search a concept, see matching neurons' decoded tokens and activation evidence, clamp one.

``?concept=coffee&clamp=-25`` in the page's URL fills the concept and the clamp value.

From a saved ``neurons.parquet`` the search is a filter of the decoded tokens (instant); with
a model it is ``interp.neurons.find`` over every neuron. Evidence and clamping need the model.
"""

from __future__ import annotations

import math

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from interp.app import model_cache, ui
from interp.errors import InterpError

SOURCES = ("Saved report (neurons.parquet)", "Search the picked model")


def parse_words(text: str) -> list[str]:
    """Comma-separated words, stripped; a quoted word keeps its spaces (``" red"``: that token only)."""
    words = []
    for part in text.split(","):
        w = part.strip()
        if len(w) >= 2 and w[0] == w[-1] and w[0] in "'\"":
            w = w[1:-1]
        if w.strip():
            words.append(w)
    return words


def search_decoded(df: pd.DataFrame, words: list[str]) -> pd.DataFrame:
    """Neurons of a decode table that have a concept token among their top tokens.

    As in ``interp.neurons.find``: ``"dog"`` matches the tokens ``"dog"`` and ``" dog"``,
    ``" dog"`` only ``" dog"``. Sorted by the concept token's best rank, then probability.
    """
    wanted = {v for w in words for v in ([w] if w.startswith(" ") else [w.strip(), " " + w.strip()])}
    hits = df[df["token"].isin(wanted)].sort_values(["rank", "prob"], ascending=[True, False], kind="stable")
    best = hits.drop_duplicates(["layer", "neuron"]).rename(columns={"rank": "rank_of_concept", "token": "concept_token",
                                                                     "prob": "concept_prob"})
    if best.empty:
        return best[["layer", "neuron", "rank_of_concept", "concept_token", "concept_prob"]].assign(top_tokens=[])
    top = (df[df.set_index(["layer", "neuron"]).index.isin(best.set_index(["layer", "neuron"]).index) & (df["rank"] <= 5)]
           .sort_values("rank").groupby(["layer", "neuron"])["token"].agg(lambda t: ", ".join(map(repr, t))))
    best = best.join(top.rename("top_tokens"), on=["layer", "neuron"])
    return best[["layer", "neuron", "rank_of_concept", "concept_token", "concept_prob", "top_tokens"]].reset_index(drop=True)


@ui.cached
def _find(spec: str, words: tuple[str, ...]) -> tuple[pd.DataFrame, list[str]]:
    """The top neurons, and the warnings find gave (kept, since a cached call does not warn again)."""
    import warnings

    from interp import neurons

    with model_cache.using(spec) as model, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        hits = neurons.find(model, list(words), top=25, progress=False)
    return hits, list(dict.fromkeys(str(w.message) for w in caught))


@ui.cached
def _decode_layer(spec: str, layer: int) -> pd.DataFrame:
    from interp import neurons

    with model_cache.using(spec) as model:
        return neurons.decode(model, k=10, layers=[layer], progress=False)


def _hits(source: str, words: list[str]) -> tuple[pd.DataFrame, pd.DataFrame | None] | None:
    """(matching neurons, the decode table they came from if it was a file)."""
    if source == SOURCES[0]:
        report = ui.pick_report("neurons")
        if report is None:
            return None
        df = ui.read(report)
        hits = search_decoded(df, words)
        if hits.empty:
            k = int(df["rank"].max())
            raise InterpError(f"no neuron in {report.folder.name} has {words} among its top {k} decoded tokens; "
                              "try another word, or search the picked model (it ranks every neuron)")
        return hits, df
    spec = ui.model_spec()
    assert spec is not None
    with st.spinner("Decoding every neuron through the unembedding (about a minute for SmolLM2 on a CPU)…"):
        hits, notes = _find(spec, tuple(words))
    for note in notes:
        st.warning(ui.md(note))
    return hits, None


def _pick(hits: pd.DataFrame) -> tuple[int, int]:
    event = st.dataframe(hits, hide_index=True, height=min(300, 40 + 35 * len(hits)), on_select="rerun",
                         selection_mode="single-row", key="neuron_table",
                         column_config={c: st.column_config.NumberColumn(format="%.2e")
                                        for c in ("concept_prob", "top_prob") if c in hits.columns})
    rows = event.selection.rows if event is not None and hasattr(event, "selection") else []
    row = hits.iloc[rows[0] if rows else 0]
    pick = (int(row["layer"]), int(row["neuron"]))
    if st.session_state.get("_neuron_picked") != pick:  # the table seeds the inputs; typing overrides
        st.session_state["_neuron_picked"] = pick
        st.session_state["n_layer"], st.session_state["n_neuron"] = pick
    c1, c2 = st.columns(2)
    return (int(c1.number_input("Layer", min_value=0, step=1, key="n_layer")),
            int(c2.number_input("Neuron", min_value=0, step=1, key="n_neuron")))


def _decoded(layer: int, neuron: int, table: pd.DataFrame | None, spec: str | None) -> None:
    if table is None or not ((table["layer"] == layer) & (table["neuron"] == neuron)).any():
        if spec is None:
            st.info(f"L{layer}N{neuron} is not in the report; pick a model to decode it.")
            return
        with model_cache.using(spec) as model:
            from interp.neurons.vectors import check_neuron

            check_neuron(model, layer, neuron)
        table = _decode_layer(spec, layer)
    rows = table[(table["layer"] == layer) & (table["neuron"] == neuron)].sort_values("rank")
    fig = go.Figure(go.Bar(x=rows["prob"], y=[repr(t) for t in rows["token"]], orientation="h"))
    fig.update_layout(title=f"L{layer}N{neuron}: top decoded tokens", xaxis_title="probability",
                      yaxis={"autorange": "reversed"}, height=120 + 24 * len(rows))
    st.plotly_chart(fig, key="decoded")


def _evidence(spec: str, layer: int, neuron: int, words: list[str]) -> None:
    from interp import neurons

    sets = neurons.load_concepts()
    names = [*sets, "custom"]
    guess = next((n for n, s in sets.items() if {w.strip().lower() for w in words} & {w.lower() for w in s["words"]}),
                 "custom")
    chosen = st.selectbox("Prompts", names, index=names.index(guess), key="concept_set",
                          help="Shipped sets pair each prompt about the concept with a matched control prompt.")
    if chosen == "custom":
        c1, c2 = st.columns(2)
        prompts = c1.text_area("Concept prompts (one per line)", key="custom_prompts").splitlines()
        controls = c2.text_area("Control prompts (one per line)", key="custom_controls").splitlines()
    else:
        prompts, controls = sets[chosen]["prompts"], sets[chosen]["controls"]
    if st.button("Measure activations", key="measure"):
        prompts, controls = [p for p in prompts if p.strip()], [p for p in controls if p.strip()]
        if not prompts or not controls:
            raise InterpError("activation evidence needs at least one concept prompt and one control prompt")
        with st.spinner("Running the prompts…"), model_cache.using(spec) as model:
            st.session_state["evidence"] = neurons.activation_evidence(model, layer, neuron, prompts, controls)
    ev = st.session_state.get("evidence")
    if ev is not None and (ev.layer, ev.neuron) == (layer, neuron):
        c1, c2, c3 = st.columns(3)
        c1.metric("concept prompts (max)", f"{ev.concept_mean:.3f}")
        c2.metric("control prompts (max)", f"{ev.control_mean:.3f}")
        c3.metric("Cohen's d", f"{ev.cohens_d:.2f}")
        fig = go.Figure([go.Box(y=ev.concept_values, name="concept", boxpoints="all"),
                         go.Box(y=ev.control_values, name="control", boxpoints="all")])
        fig.update_layout(title=f"L{layer}N{neuron} activation ({ev.stat} over tokens)", height=320)
        st.plotly_chart(fig, key="evidence_plot")


MAX_PARAM = 1e6  # the largest magnitude a number in the URL may set


def _float_param(name: str, default: float) -> float:
    """A number from the page's URL (``?clamp=-25``), so a view can be linked to; else ``default``
    (with a warning when the URL holds something else: not a number, not finite, or beyond
    ±``MAX_PARAM``)."""
    raw = st.query_params.get(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except (TypeError, ValueError):
        value = math.nan
    if not math.isfinite(value) or abs(value) > MAX_PARAM:
        shown = raw if len(raw) <= 40 else raw[:37] + "..."
        st.warning(ui.md(f"?{name}={shown} in the page's URL is not a number in ±{MAX_PARAM:g}; "
                         f"starting from {default:g}"))
        return default
    return value


def _clamp(spec: str, layer: int, neuron: int, words: list[str]) -> None:
    from interp import neurons

    c1, c2 = st.columns([1, 3])
    value = c1.number_input("Clamp value", value=_float_param("clamp", 10.0), step=1.0, key="clamp_value")
    prompt = c2.text_input("Prompt", neurons.neutral_prompts()[0], key="clamp_prompt")
    n_new = st.slider("New tokens", 1, 40, 15, key="clamp_tokens")
    if st.button("Generate with and without the clamp", key="generate"):
        if not prompt.strip():
            raise InterpError("type a prompt to generate from")
        with st.spinner("Generating twice…"), model_cache.using(spec) as model, ui.warnings_shown():
            st.session_state["steered"] = neurons.clamp_effect(model, layer, neuron, value, prompt, words, n_new)
    r = st.session_state.get("steered")
    if r is not None and (r.layer, r.neuron) == (layer, neuron):
        left, right = st.columns(2)
        with left:
            st.markdown("**Unclamped**")
            st.code(r.prompt + r.text_base, language=None, wrap_lines=True)
            st.caption(f"p(concept) next = {r.p_base:.3g}")
        with right:
            st.markdown(f"**L{r.layer}N{r.neuron} clamped at {r.value:g}**")
            st.code(r.prompt + r.text_clamped, language=None, wrap_lines=True)
            st.caption(ui.md(f"p(concept) next = {r.p_clamped:.3g} (×{r.ratio:.3g}); tokens {r.concept_tokens}"))


def page() -> None:
    st.title("Neurons")
    spec = ui.model_spec()
    source = st.radio("Search", SOURCES if spec else SOURCES[:1], horizontal=True, key="neuron_source")
    words = parse_words(st.text_input("Concept (comma-separated words; quote one to keep a leading space, as in \" red\")",
                                      st.query_params.get("concept", "dog"), key="concept"))
    if not words:
        st.error("Type at least one word to search for, e.g. dog, dogs.")
        return
    found = None
    with ui.shown_errors("Neuron search"):
        found = _hits(source, words)
    if found is None:
        return
    hits, table = found
    layer, neuron = _pick(hits)
    with ui.shown_errors("Decoded tokens"):
        _decoded(layer, neuron, table, spec)
    st.subheader("Activation evidence")
    spec = ui.need_model("Activation evidence and clamping")
    if spec is None:
        return
    with ui.shown_errors("Activation evidence"):
        _evidence(spec, layer, neuron, words)
    st.subheader("Clamp and generate")
    with ui.shown_errors("Clamping"):
        _clamp(spec, layer, neuron, words)


if __name__ == "__main__":
    page()
