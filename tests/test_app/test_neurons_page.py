"""Neurons page: search a decode report, live search with a tiny model, evidence, clamping, errors."""

from __future__ import annotations

import pandas as pd
from app_checks import errors, no_trouble

from interp.app.views.neurons import parse_words, search_decoded


def test_search_decoded_follows_find_rules():
    df = pd.DataFrame({
        "layer": [0, 0, 1, 1, 2, 2], "neuron": [5, 5, 7, 7, 3, 3], "rank": [1, 2, 1, 2, 1, 2],
        "token": [" dog", " cat", "dog", " the", " red", "dogs"], "prob": [0.2, 0.1, 0.3, 0.1, 0.4, 0.05],
    })
    hits = search_decoded(df, ["dog"])
    assert list(zip(hits.layer, hits.neuron, hits.concept_token, strict=True)) == [(1, 7, "dog"), (0, 5, " dog")]
    assert hits.top_tokens[1] == "' dog', ' cat'"
    only_spaced = search_decoded(df, [" dog"])
    assert list(only_spaced.neuron) == [5]
    assert search_decoded(df, ["horse"]).empty
    assert parse_words(" dog, dogs ,, ") == ["dog", "dogs"]
    assert parse_words('" red", \'cat\'') == [" red", "cat"]


def test_renders_from_report_alone(app, reports_root):
    at = app("neurons", reports=reports_root)
    no_trouble(at)
    assert at.title[0].value == "Neurons"
    table = at.dataframe[0].value
    assert {(int(r.layer), int(r.neuron)) for r in table.itertuples()} == {(1, 7), (2, 3)}
    assert (int(table.layer[0]), int(table.neuron[0])) == (1, 7)  # rank 1 before rank 3
    decoded = at.get("plotly_chart")
    assert len(decoded) == 1 and "L1N7" in decoded[0].proto.spec
    assert any("needs a model" in i.value for i in at.info)


def test_reacts_to_neuron_choice(app, reports_root):
    at = app("neurons", reports=reports_root)
    at.number_input(key="n_layer").set_value(2).run()
    at.number_input(key="n_neuron").set_value(3).run()
    no_trouble(at)
    assert "L2N3" in at.get("plotly_chart")[0].proto.spec


def test_bad_inputs_show_errors(app, reports_root):
    at = app("neurons", reports=reports_root)
    at.text_input(key="concept").input(" , ").run()
    assert any("at least one word" in e for e in errors(at))
    at.text_input(key="concept").input("zebra").run()
    assert any("no neuron" in e and "zebra" in e for e in errors(at)), errors(at)
    assert not at.exception


def test_live_search_evidence_and_clamp(app, tmp_path, tiny_model):
    at = app("neurons", reports=tmp_path, model=tiny_model)
    at.radio(key="neuron_source").set_value("Search the picked model").run()
    no_trouble(at)
    hits = at.dataframe[0].value
    assert len(hits) == 25 and {"layer", "neuron", "concept_z", "top_tokens"} <= set(hits.columns)
    layer, neuron = int(hits.layer[0]), int(hits.neuron[0])
    assert f"L{layer}N{neuron}" in at.get("plotly_chart")[0].proto.spec  # decoded live

    assert at.selectbox(key="concept_set").value == "dog"  # the shipped set matching the word
    at.button(key="measure").click().run()
    no_trouble(at)
    assert [m.label for m in at.metric] == ["concept prompts (max)", "control prompts (max)", "Cohen's d"]

    at.number_input(key="clamp_value").set_value(50.0)
    at.slider(key="clamp_tokens").set_value(3)
    at.button(key="generate").click().run()
    no_trouble(at)
    left, right = [c.value for c in at.code]
    prompt = at.text_input(key="clamp_prompt").value
    assert left.startswith(prompt) and right.startswith(prompt)
    assert any("clamped at 50" in m.value for m in at.markdown)


def test_evidence_needs_prompts(app, tmp_path, tiny_model):
    at = app("neurons", reports=tmp_path, model=tiny_model)
    at.radio(key="neuron_source").set_value("Search the picked model").run()
    at.selectbox(key="concept_set").select("custom").run()
    at.button(key="measure").click().run()
    assert any("at least one concept prompt" in e for e in errors(at)), errors(at)
    at.number_input(key="n_neuron").set_value(10_000).run()
    assert any("neuron 10000 is out of range" in e for e in errors(at)), errors(at)
    assert not at.exception


def test_split_words_are_reported_on_the_page(app, tmp_path, tiny_model):
    at = app("neurons", reports=tmp_path, model=tiny_model)
    at.radio(key="neuron_source").set_value("Search the picked model").run()
    at.text_input(key="concept").input("dog, ice-cream").run()
    no_trouble(at)
    assert any("'ice-cream' is 3 tokens" in w.value for w in at.warning), [w.value for w in at.warning]
    at.button(key="generate").click().run()
    no_trouble(at)
    assert any("'ice-cream' is 3 tokens" in w.value for w in at.warning)
    assert len(at.code) == 2


def test_url_fills_the_concept_and_clamp(app, reports_root, tiny_model):
    at = app("neurons", reports=reports_root, model=tiny_model, query={"concept": "cat", "clamp": "-3"})
    no_trouble(at)
    assert at.number_input(key="clamp_value").value == -3.0
    assert at.text_input(key="concept").value == "cat"
    assert all("cat" in t for t in at.dataframe[0].value["concept_token"])
