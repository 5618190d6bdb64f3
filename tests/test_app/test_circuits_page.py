"""Circuits page: ICL steps, ablation and patching from files alone; errors for broken reports."""

from __future__ import annotations

import base64
import json

import numpy as np
from app_checks import errors, no_trouble, progress_reports
from report_fixtures import write_circuits, write_icl_run


def _specs(at) -> str:
    """The titles of every chart on the page, one a line."""
    return "\n".join(json.loads(c.proto.spec)["layout"]["title"]["text"] for c in at.get("plotly_chart"))


def test_renders_steps_ablation_and_patching(app, reports_root):
    at = app("circuits", reports=reports_root)
    no_trouble(at)
    assert at.title[0].value.startswith("Circuits")
    assert [t.label for t in at.tabs] == ["Steps", "Ablation", "Patching"]
    specs = _specs(at)
    # the report's own figures (ICLResult.figure), for the chosen dataset
    for title in ("ICL accuracy by demonstrations", "The three steps by layer", "Knockout of each step's edges",
                  "blocks.*.attn.hook_z: effect by layer and head (all positions patched at once)"):
        assert title in specs, title
    steps = _chart(at, "The three steps by layer")
    assert {t["name"].split(":")[0] for t in steps["data"]} == {"sentiment"}  # one dataset's rows
    ablation = at.dataframe[1].value
    assert set(ablation["step"]) == {"summarize", "merge", "retrieval", "random"}
    assert any("same layers" in c.value for c in at.caption)
    assert any("4 pairs" in c.value and "corrupted -0.750" in c.value.replace("−", "-") for c in at.caption)


def _chart(at, title: str) -> dict:
    return next(json.loads(c.proto.spec) for c in at.get("plotly_chart")
                if json.loads(c.proto.spec)["layout"]["title"]["text"].startswith(title))


def _z(at, title: str) -> np.ndarray:
    """A heatmap's values (plotly sends arrays as base64 ``bdata``)."""
    z = _chart(at, title)["data"][0]["z"]
    if isinstance(z, dict):
        shape = [int(n) for n in str(z["shape"]).split(",")] if "shape" in z else -1
        return np.frombuffer(base64.b64decode(z["bdata"]), dtype=z["dtype"]).reshape(shape)
    return np.array(z, dtype=float)


def test_reacts_to_dataset_and_site(app, reports_root):
    at = app("circuits", reports=reports_root)
    assert _z(at, "blocks.*.attn.hook_z")[1, 2] == 0.6  # sentiment's planted head, the file's rows for that dataset only
    at.selectbox(key="icl_dataset").select("topic").run()
    no_trouble(at)
    assert "— topic" in _specs(at)
    assert _z(at, "blocks.*.attn.hook_z")[2, 0] == 0.6
    assert at.selectbox(key="patch_site").options == ["blocks.*.attn.hook_z", "blocks.*.hook_resid_pre"]
    at.selectbox(key="patch_site").select("blocks.*.hook_resid_pre").run()
    no_trouble(at)
    assert "blocks.*.hook_resid_pre: effect by layer and position" in _specs(at)
    assert "effect by layer and head" not in _specs(at)  # one head only: no head heatmap
    assert _chart(at, "blocks.*.hook_resid_pre")["data"][0]["x"][-2:] == ["44 ↵", "45 :"]  # positions named by token


def test_per_position_head_patching(app, tmp_path):
    write_circuits(tmp_path / "positions", layout="positions")
    at = app("circuits", reports=tmp_path)
    no_trouble(at)
    assert "blocks.*.attn.hook_z: effect by layer and position" in _specs(at)
    at.selectbox(key="patch_site").select("blocks.*.hook_resid_post").run()
    no_trouble(at)
    assert "effect by layer and head" not in _specs(at)
    at.selectbox(key="patch_site").select("blocks.*.attn.hook_z").run()
    at.selectbox(key="patch_head").select(2).run()
    no_trouble(at)
    assert "head 2" in _specs(at)


def test_renders_a_report_written_by_interp_icl(app, tmp_path):
    """The files of a real (tiny-model) ``interp icl`` run, patching included, open on the page."""
    write_icl_run(tmp_path / "icl")
    at = app("circuits", reports=tmp_path)
    no_trouble(at)
    assert "blocks.*.attn.hook_z: effect by layer and head (all positions patched at once)" in _specs(at)
    assert _z(at, "blocks.*.attn.hook_z").shape == (3, 4)  # layers × heads
    at.selectbox(key="icl_dataset").select("topic").run()
    at.selectbox(key="patch_site").select("blocks.*.hook_resid_pre").run()
    no_trouble(at)
    assert "blocks.*.hook_resid_pre: effect by layer and position" in _specs(at)


def test_missing_patching_is_explained(app, tmp_path):
    write_circuits(tmp_path / "no_patching", patching=False)
    at = app("circuits", reports=tmp_path)
    no_trouble(at)
    assert any("No patching.parquet" in i.value for i in at.info)


def test_bad_report_shows_error(app, tmp_path):
    folder = write_circuits(tmp_path / "bad")
    data = json.loads((folder / "icl.json").read_text())
    del data["ablation"]
    data["merge"][0].pop("heads_above")
    (folder / "icl.json").write_text(json.dumps(data))
    at = app("circuits", reports=tmp_path)
    assert any("lacks 'ablation'" in e for e in errors(at)), errors(at)
    data["ablation"] = []
    (folder / "icl.json").write_text(json.dumps(data))
    at = app("circuits", reports=tmp_path)
    assert any("merge[0] lacks 'heads_above'" in e for e in errors(at)), errors(at)
    assert not at.exception


def _patch_inputs(at, clean: str, corrupted: str, good: str, bad: str) -> None:
    at.text_input(key="patch_clean").input(clean)
    at.text_input(key="patch_corrupted").input(corrupted)
    at.text_input(key="patch_good").input(good)
    at.text_input(key="patch_bad").input(bad)


def test_live_patching_with_model(app, tmp_path, tiny_model, monkeypatch):
    seen = progress_reports(monkeypatch)
    at = app("circuits", reports=tmp_path, model=tiny_model)
    no_trouble(at)
    _patch_inputs(at, "the dog saw the cat and the", "the cat saw the cat and the", " dog", " cat")
    at.button(key="run_patching").click().run()
    no_trouble(at)
    assert seen and seen[-1][0] == "patching" and seen[-1][1] == seen[-1][2], seen  # activation_patching's own loop
    assert "Activation patching (denoise): blocks.*.hook_resid_pre" in _specs(at)
    df = at.session_state["patching_result"].df
    assert len(df) == 3 * 7  # layers × positions
    # Restoring the clean embedding where the prompts differ makes the run the clean run.
    first = df[(df["layer"] == 0) & (df["position"] == 1)]["effect"].item()
    assert abs(first - 1.0) < 1e-5
    assert df[(df["layer"] == 0) & (df["position"] == 4)]["effect"].abs().item() < 1e-5


def test_live_patching_bad_inputs(app, tmp_path, tiny_model):
    at = app("circuits", reports=tmp_path, model=tiny_model)
    _patch_inputs(at, "the dog saw the cat", "the cat saw", " dog", " cat")
    at.button(key="run_patching").click().run()
    assert any("same shape" in e for e in errors(at)), errors(at)
    _patch_inputs(at, "the dog saw", "the cat saw", " ", " cat")
    at.button(key="run_patching").click().run()
    assert any("give both answers" in e for e in errors(at)), errors(at)
    assert not at.exception
