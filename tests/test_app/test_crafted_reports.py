"""Crafted report files in the app: each page shows the reader's message (st.error) instead of
crashing, and picking a valid report afterwards shows it with no trace of the bad one. Names
from files reach markdown escaped; a number in the URL that is not one is a warning."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from app_checks import errors, no_trouble, shown
from report_fixtures import write_circuits, write_heads, write_knob, write_neurons

PAYLOAD = "![x](http://example.invalid/p.png)<script>alert(1)</script>"


def pair(root: Path, writer: Callable[[Path], Path], marker: str, change: Callable[[Any], Any] | None = None) -> Path:
    """``root/a-crafted`` (listed first, so the page opens on it) with ``change`` made to its
    marker file, and ``root/b-valid`` as written."""
    writer(root / "b-valid")
    folder = writer(root / "a-crafted")
    (folder / ".interp-manifest.json").unlink(missing_ok=True)  # hand-edited: no longer what interp wrote
    if change is not None:
        doc = json.loads((folder / marker).read_text())
        change(doc)
        (folder / marker).write_text(json.dumps(doc))
    return root


def switch_to_valid(at, key: str) -> None:
    at.selectbox(key=key).select_index(1).run()
    no_trouble(at)
    assert "b-valid" in at.selectbox(key=key).value.label


HEADS = {
    "layer -1": (lambda d: d["scores"][0].update(layer=-1), r"scores[0].layer is -1; valid: a layer in 0..2 (shape.layers is 3)"),
    "layer 99": (lambda d: d["scores"][0].update(layer=99), r"scores[0].layer is 99; valid: a layer in 0..2 (shape.layers is 3)"),
    "kv_heads 0": (lambda d: d["shape"].update(kv_heads=0), "shape.kv_heads is 0; valid: an integer 1..4"),
    "a string value": (lambda d: d["scores"][0].update(value="0.5"), "scores[0].value is '0.5' (a string)"),
    "a number as score": (lambda d: d["scores"][0].update(score=5), "scores[0].score is 5; valid: a non-empty string"),
    "huge shape": (lambda d: d["shape"].update(layers=10**9, heads=10**9), "shape.layers is 1000000000; valid: an integer 1..4096"),
    "no rows and no shape": (lambda d: d.update(scores=[], shape=None), "shape is missing and scores is empty"),
    "missing key": (lambda d: d["scores"][0].pop("score"), "scores[0] lacks 'score'; valid: an object with the keys score, layer, head, value"),
    "NaN": (lambda d: d["scores"][0].update(value=float("nan")), "not strict JSON (it holds NaN"),
}


@pytest.mark.parametrize("case", sorted(HEADS))
def test_crafted_head_reports_are_messages_and_a_valid_one_shows_after(case, app, tmp_path):
    change, message = HEADS[case]
    at = app("heads", reports=pair(tmp_path, write_heads, "head_scores.json", change))
    assert not at.exception, [e.value for e in at.exception]
    assert any("not a head-score report" in e and "a-crafted/head_scores.json" in e and message in e for e in errors(at)), \
        errors(at)
    switch_to_valid(at, "heads_report")
    assert len(at.get("plotly_chart")) == 3 and len(at.dataframe[0].value) == 12


def test_a_score_missing_for_every_head_still_shows(app, tmp_path):
    """A score that is null everywhere (retrieval when no needle was recalled) is a valid report."""
    def no_induction(d):
        for r in d["scores"]:
            if r["score"] == "induction":
                r["value"] = None

    at = app("heads", reports=pair(tmp_path, write_heads, "head_scores.json", no_induction))
    no_trouble(at)
    assert at.dataframe[0].value["induction"].isna().all()

    def nothing(d):
        for r in d["scores"]:
            r["value"] = None

    at = app("heads", reports=pair(tmp_path / "empty", write_heads, "head_scores.json", nothing))
    no_trouble(at)
    assert any("no head to pick" in i.value for i in at.info)


KNOB = {
    "layer 99": (lambda d: d.update(layer=99), "layer is 99; valid: a layer in 0..2 (patching covers 3 layers)"),
    "a string swept value": (lambda d: d["sweep"][0].update(value="x"), "sweep[0].value is 'x' (a string); valid: a finite number"),
    "flip rates null": (lambda d: d.update(flip_rate=None), "flip_rate is null; valid: an object"),
    "a string accuracy": (lambda d: d["accuracy"].update(prior="x"), "accuracy.prior is 'x' (a string)"),
    "an unknown method": (lambda d: d["sweep"][0].update(method="pca"), "sweep[0].method is 'pca' (a string); valid: one of das"),
}


def test_crafted_direction_is_a_message(app, tmp_path, tiny_model):
    import torch
    from safetensors.torch import save_file

    folder = write_knob(tmp_path / "knob")
    save_file({"direction": torch.full((64,), float("nan"))}, str(folder / "direction.safetensors"))
    at = app("knob", reports=tmp_path, model=tiny_model)
    assert not at.exception
    assert any("tensor 'direction' is a vector with NaN or infinite entries" in e for e in errors(at)), errors(at)


CIRCUITS = {
    "head layer 99": (lambda d: d.update(shape={"layers": 3, "heads": 4}) or d["heads"][0].update(layer=99),
                      "heads[0].layer is 99; valid: a layer in 0..2 (shape.layers is 3)"),
    "head -1 without a shape": (lambda d: d["heads"][0].update(head=-1),
                                "heads[0].head is -1; valid: a head in 0..4095 (no shape is recorded)"),
    "huge shape": (lambda d: d.update(shape={"layers": 10**9, "heads": 4}), "shape.layers is 1000000000"),
    "a number as dataset": (lambda d: d["accuracy"][0].update(dataset=1), "accuracy[0].dataset is 1; valid: a string"),
    "a summary that is no object": (lambda d: d["patching"]["datasets"].update(sentiment=5),
                                    "patching.datasets['sentiment'] is 5; valid: an object"),
}


# page -> (writer, the file a crafted copy changes, the page's title for it, the crafted cases)
PAGES = {"knob": (write_knob, "knob.json", "Knob report", KNOB),
         "circuits": (write_circuits, "icl.json", "Circuits report", CIRCUITS)}


@pytest.mark.parametrize(("page", "case"), [(page, case) for page, (*_, cases) in PAGES.items() for case in sorted(cases)])
def test_crafted_knob_and_circuits_reports_are_messages(page, case, app, tmp_path):
    writer, marker, title, cases = PAGES[page]
    change, message = cases[case]
    at = app(page, reports=pair(tmp_path, writer, marker, change))
    assert not at.exception, [e.value for e in at.exception]
    assert any(title in e and message in e for e in errors(at)), errors(at)
    switch_to_valid(at, f"{page}_report")


def test_crafted_patching_table_is_a_message(app, tmp_path):
    folder = write_circuits(tmp_path / "icl")
    df = pd.read_parquet(folder / "patching.parquet")
    df.loc[df["site"].str.endswith("attn.hook_z"), "head"] = -1
    df.to_parquet(folder / "patching.parquet", index=False)
    at = app("circuits", reports=tmp_path)
    assert not at.exception
    assert any(re.search(r"at blocks\.\d+\.attn\.hook_z, a site with a head axis", e) for e in errors(at)), errors(at)


@pytest.mark.parametrize("change, message", [
    (lambda df: df.assign(rank=df["rank"].astype(str)), "column 'rank' is of type"),
    (lambda df: df.assign(layer=-1), "column 'layer', row 0, is -1; valid: integers in 0..4095"),
    (lambda df: df.assign(prob=float("inf")), "column 'prob', row 0, is inf; valid: numbers in 0..1"),
])
def test_crafted_neuron_tables_are_messages(change, message, app, tmp_path):
    write_neurons(tmp_path / "b-valid")
    folder = write_neurons(tmp_path / "a-crafted")
    change(pd.read_parquet(folder / "neurons.parquet")).to_parquet(folder / "neurons.parquet", index=False)
    at = app("neurons", reports=tmp_path)
    assert not at.exception, [e.value for e in at.exception]
    assert any("Neuron search" in e and message in e for e in errors(at)), errors(at)
    switch_to_valid(at, "neurons_report")


def test_names_from_files_reach_markdown_escaped(app, tmp_path):
    """A model name with a markdown image and a script in it is shown as text in captions and messages."""
    write_heads(tmp_path / "heads")
    doc = json.loads((tmp_path / "heads" / "head_scores.json").read_text())
    doc["model"] = PAYLOAD
    (tmp_path / "heads" / "head_scores.json").write_text(json.dumps(doc))
    at = app("heads", reports=tmp_path)
    no_trouble(at)
    caption = next(c.value for c in at.caption if "layers ×" in c.value)
    assert r"!\[x\](http://example.invalid/p.png)\<script\>" in caption, caption
    assert "![x](" not in caption and "<script>" not in caption
    assert shown(caption).startswith(PAYLOAD)

    for page, (writer, marker, *_) in PAGES.items():
        folder = writer(tmp_path / page / "report")
        data = json.loads((folder / marker).read_text())
        data["model"] = PAYLOAD
        (folder / marker).write_text(json.dumps(data))
        at = app(page, reports=tmp_path / page)
        no_trouble(at)
        assert any(r"!\[x\]" in c.value and "![x](" not in c.value for c in at.caption), [c.value for c in at.caption]


def test_error_messages_are_escaped_markdown(app, tmp_path):
    """A crafted value quoted in an error message is shown as text, not as a link or an image."""
    at = app("heads", reports=pair(tmp_path, write_heads, "head_scores.json",
                                   lambda d: d["scores"][0].update(value=PAYLOAD)))
    raw = [e.value for e in at.error]
    assert raw and all("![x](" not in e and "<script>" not in e for e in raw), raw
    assert any(PAYLOAD in e for e in errors(at)), errors(at)


@pytest.mark.parametrize("clamp", ["1e400", "-inf", "nan", "1e9", "ten"])
def test_a_clamp_in_the_url_that_is_not_a_number_is_a_warning(clamp, app, reports_root, tiny_model):
    at = app("neurons", reports=reports_root, model=tiny_model, query={"clamp": clamp})
    no_trouble(at)
    assert any(f"?clamp={clamp} in the page's URL is not a number" in shown(w.value) for w in at.warning), \
        [w.value for w in at.warning]
    assert at.number_input(key="clamp_value").value == 10.0
    at = app("neurons", reports=reports_root, model=tiny_model, query={"clamp": "-25"})
    no_trouble(at)
    assert at.number_input(key="clamp_value").value == -25.0
