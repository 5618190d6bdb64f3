"""Knob page: plots from knob.json alone, the projection slider with a tiny model, errors."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import torch
from app_checks import errors, no_trouble
from report_fixtures import write_knob

from interp.app.views.knob import answer, slider_range


def test_answer_picks_the_larger_logit():
    assert answer(np.array([2.0, 0.0]))[0] == "prior"
    which, share = answer(np.array([0.0, np.log(3.0)]))
    assert which == "context" and np.isclose(share, 0.75)


def test_slider_range_follows_the_method():
    from report_fixtures import knob_data

    sweep = pd.DataFrame(knob_data()["sweep"])
    assert slider_range(sweep, "das") == (-8.0, 8.0, 0.0)
    assert slider_range(sweep, "diff_means") == (-5.5, 6.5, 0.5)  # starts at the midpoint, k = 0
    assert slider_range(sweep.drop(columns="k"), "nothing") == (-8.0, 8.0, 0.0)


def test_renders_from_report_alone(app, reports_root):
    at = app("knob", reports=reports_root)
    no_trouble(at)
    assert at.title[0].value.startswith("Knob")
    assert {m.label: m.value for m in at.metric}["flip rate, DAS"] == "84%"
    sweep, patching = (json.loads(c.proto.spec) for c in at.get("plotly_chart"))
    assert {"das", "diff_means", "random", "das, prior intent"} <= {t["name"] for t in sweep["data"]}
    assert "chosen layer 1" in patching["layout"]["title"]["text"]
    assert [t["name"] for t in patching["data"]] == ["prior->context", "context->prior"]
    assert any("needs a model" in i.value for i in at.info)


def test_null_numbers_render_as_dashes(app, tmp_path):
    """knob.json writes NaN (e.g. a correlation over items that all score the same) as null."""
    folder = write_knob(tmp_path / "knob-null")
    doc = json.loads((folder / "knob.json").read_text())
    doc["correlation"], doc["flip_rate"]["das"] = None, None
    (folder / "knob.json").write_text(json.dumps(doc))
    at = app("knob", reports=tmp_path)
    no_trouble(at)
    assert {m.label: m.value for m in at.metric}["flip rate, DAS"] == "—"
    assert any("accuracy —." in c.value for c in at.caption)


def test_slider_switches_the_answer(app, reports_root, tiny_model):
    """With the direction planted as the answer's logit difference, the slider's ends give both answers."""
    import interp
    from interp.probes.knob_task import KnobItem, first_token, prompt

    # Rewrite the direction so that moving along it raises the context answer over the prior one.
    model = interp.load(tiny_model)
    item = KnobItem("", "France", "England", "Paris is in England.", "Where is Paris?")
    text = prompt(model, item, "context")
    u_matrix = model.weight(model.adapter.unembed).detach().float()
    diff = u_matrix[first_token(model, "England", text)] - u_matrix[first_token(model, "France", text)]
    folder = write_knob(reports_root.parent / "knob_planted" / "tiny-llama", layer=2)
    from safetensors.torch import save_file

    save_file({"direction": (diff / diff.norm()).contiguous(), "random0": torch.ones(64) / 8},
              str(folder / "direction.safetensors"))

    at = app("knob", reports=folder.parent, model=tiny_model)
    no_trouble(at)
    answers = {}
    for value in (-8.0, 8.0):
        at.slider(key="knob_value_direction").set_value(value).run()
        no_trouble(at)
        answers[value] = [m.value for m in at.metric if m.label == "answer"]
    assert answers[-8.0][1] == "France (prior)" and answers[8.0][1] == "England (context)"
    assert answers[-8.0][0] == answers[8.0][0]  # the unsteered answer does not move
    assert any(f"Projection set to {8.0:.2f}" in m.value for m in at.markdown)
    at.selectbox(key="knob_direction").select("random0").run()  # a baseline direction, its own slider
    no_trouble(at)
    assert at.slider(key="knob_value_random0").value == 0.0


def test_slider_reacts_to_item_and_intent(app, reports_root, tiny_model):
    at = app("knob", reports=reports_root, model=tiny_model)
    at.selectbox(key="knob_item").select(2).run()
    at.radio(key="knob_intent").set_value("prior").run()
    no_trouble(at)
    assert all(m.value.split(" ")[0] in ("Germany", "Japan") for m in at.metric if m.label == "answer")


def test_bad_reports_show_errors(app, tmp_path, tiny_model):
    folder = write_knob(tmp_path / "missing_keys")
    data = json.loads((folder / "knob.json").read_text())
    del data["sweep"], data["layer"]
    (folder / "knob.json").write_text(json.dumps(data))
    at = app("knob", reports=tmp_path)
    assert any("lacks 'layer', 'sweep'" in e for e in errors(at)), errors(at)
    assert not at.exception

    (folder / "knob.json").write_text("{not json")
    at = app("knob", reports=tmp_path)
    assert any("cannot read" in e for e in errors(at)), errors(at)

    wrong = write_knob(tmp_path / "other" / "wrong_size", d_model=32)
    at = app("knob", reports=wrong, model=tiny_model)
    assert any("32 entries but the model's d_model is 64" in e for e in errors(at)), errors(at)
    (wrong / "direction.safetensors").unlink()
    at = app("knob", reports=wrong, model=tiny_model)
    assert any("no direction.safetensors" in e for e in errors(at)), errors(at)
    assert not at.exception
