"""Circuits page: ICL steps, ablation and patching from files alone; errors for broken reports."""

from __future__ import annotations

import json

from app_checks import errors, no_trouble
from report_fixtures import write_circuits


def _specs(at) -> str:
    """The titles of every chart on the page, one a line."""
    return "\n".join(json.loads(c.proto.spec)["layout"]["title"]["text"] for c in at.get("plotly_chart"))


def test_renders_steps_ablation_and_patching(app, reports_root):
    at = app("circuits", reports=reports_root)
    no_trouble(at)
    assert at.title[0].value.startswith("Circuits")
    assert [t.label for t in at.tabs] == ["Steps", "Ablation", "Patching"]
    specs = _specs(at)
    for title in ("ICL accuracy by shots", "Summarize", "Merge heads", "Retrieval by layer",
                  "Accuracy drop when ablating each step", "attn.hook_z: effect by layer and position"):
        assert title in specs, title
    ablation = at.dataframe[1].value
    assert set(ablation["step"]) == {"summarize", "merge", "retrieval", "random"}


def test_reacts_to_dataset_and_site(app, reports_root):
    at = app("circuits", reports=reports_root)
    at.selectbox(key="icl_dataset").select("topic").run()
    no_trouble(at)
    assert "— topic" in _specs(at)
    at.selectbox(key="patch_site").select("hook_resid_post").run()
    no_trouble(at)
    assert "hook_resid_post: effect by layer and position" in _specs(at)
    assert "effect by layer and head" not in _specs(at)  # one head only: no head heatmap
    at.selectbox(key="patch_site").select("attn.hook_z").run()
    at.selectbox(key="patch_head").select(2).run()
    no_trouble(at)
    assert "head 2" in _specs(at)


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


def test_live_patching_with_model(app, tmp_path, tiny_model):
    at = app("circuits", reports=tmp_path, model=tiny_model)
    no_trouble(at)
    _patch_inputs(at, "the dog saw the cat and the", "the cat saw the cat and the", " dog", " cat")
    at.button(key="run_patching").click().run()
    no_trouble(at)
    assert "Activation patching (denoise): resid_pre" in _specs(at)
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
