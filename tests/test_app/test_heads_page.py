"""Head-scores page: heatmaps and table from a report, the attention view with a tiny model, errors."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from app_checks import errors, no_trouble, progress_reports
from report_fixtures import write_heads


def test_renders_from_report_alone(app, reports_root):
    at = app("heads", reports=reports_root)
    no_trouble(at)
    assert at.title[0].value == "Head scores"
    charts = at.get("plotly_chart")
    assert len(charts) == 3  # prev_token, duplicate, induction by default (not the *_text variants)
    assert '"type":"heatmap"' in charts[0].proto.spec.replace(" ", "")
    table = at.dataframe[0].value
    assert (int(table.loc[0, "layer"]), int(table.loc[0, "head"])) == (2, 1)  # planted induction head on top
    assert any("needs a model" in i.value for i in at.info)


def test_reacts_to_sort_and_heatmap_choice(app, reports_root):
    at = app("heads", reports=reports_root)
    at.selectbox(key="sort_by").select("prev_token").run()
    table = at.dataframe[0].value
    assert (int(table.loc[0, "layer"]), int(table.loc[0, "head"])) == (1, 3)
    at.multiselect(key="heatmap_scores").set_value(["induction"]).run()
    assert len(at.get("plotly_chart")) == 1
    no_trouble(at)


def test_attention_view_with_model(app, reports_root, tiny_model):
    at = app("heads", reports=reports_root, model=tiny_model)
    no_trouble(at)
    # The top induction head is preselected; one query row (the last token) is drawn.
    assert (at.number_input(key="layer").value, at.number_input(key="head").value) == (2, 1)
    spans = at.get("html")
    assert len(spans) == 1 and spans[0].proto.body.count("<span") > 10
    assert "attends most to" in at.markdown[0].value
    at.text_area(key="prompt").input("the cat sat on the mat . the cat sat on the").run()
    at.multiselect(key="rows").set_value([3, 9]).run()
    no_trouble(at)
    assert len(at.get("html")) == 2
    assert at.get("html")[0].proto.body.count("<span") == 12  # one span per token of the new prompt
    assert any('"type":"heatmap"' in c.proto.spec.replace(" ", "") and "L2H1" in c.proto.spec
               for c in at.get("plotly_chart"))
    at.number_input(key="head").set_value(0).run()
    no_trouble(at)


def test_attention_weights_match_eager_attention(app, reports_root, tiny_model):
    """The shaded weights are the head's real attention row (checked against HF eager attention)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    prompt = "the cat sat on the mat . the cat sat on the"
    at = app("heads", reports=reports_root, model=tiny_model)
    at.text_area(key="prompt").input(prompt).run()
    at.multiselect(key="rows").set_value([4, 11]).run()
    no_trouble(at)
    hf = AutoModelForCausalLM.from_pretrained(tiny_model, attn_implementation="eager")
    ids = AutoTokenizer.from_pretrained(tiny_model)(prompt, return_tensors="pt")["input_ids"]
    eager = hf(ids, output_attentions=True).attentions[2][0, 1]  # layer 2, head 1: [query, key]
    for row, html in zip([4, 11], at.get("html"), strict=True):
        shown = [float(w) for w in re.findall(r'title="position \d+: ([0-9.]+)"', html.proto.body)]
        assert np.allclose(shown, eager[row].detach().numpy(), atol=1e-4)
        assert all(w == 0 for w in shown[row + 1:])  # later tokens are masked


def test_bad_inputs_show_errors(app, reports_root, tiny_model):
    at = app("heads", reports=reports_root, model=tiny_model)
    at.number_input(key="head").set_value(9).run()
    assert any("head 9 is out of range" in e for e in errors(at)), errors(at)
    at.number_input(key="head").set_value(0).run()
    at.text_area(key="prompt").input("the cat " * 200).run()  # 400 tokens; the tiny model's window is 256
    assert any("context window" in e for e in errors(at)), errors(at)
    at.text_area(key="prompt").input("   ").run()
    assert any("Type a prompt" in e for e in errors(at)), errors(at)
    assert not at.exception


def test_broken_report_is_a_message(app, tmp_path):
    folder = write_heads(tmp_path / "broken")
    (folder / "head_scores.json").write_text(json.dumps({"model": "x"}))
    at = app("heads", reports=tmp_path)
    assert not at.exception
    assert any("not a head-score report" in e for e in errors(at)), errors(at)


def test_no_reports_explains_how_to_make_one(app, tmp_path):
    at = app("heads", reports=tmp_path)
    no_trouble(at)
    assert any("interp heads" in i.value for i in at.info)


def test_quick_scan_with_progress(app, tiny_model, tmp_path, monkeypatch):
    seen = progress_reports(monkeypatch)
    at = app("heads", reports=tmp_path, model=tiny_model)
    at.radio(key="heads_source").set_value("Quick scan of the picked model").run()
    at.multiselect(key="scan_scores").set_value(["prev_token", "induction"]).run()
    at.button(key="run_scan").click().run()
    no_trouble(at)
    # one scan of both scores; its own loop over the work units drew the bar, to the end
    units = {total for desc, _, total in seen if desc == "head scan"}
    assert len(units) == 1 and ("head scan", *units, *units) in seen, seen
    assert at.session_state["scan_result"].scores == ["prev_token", "induction"]
    assert len(at.get("plotly_chart")) >= 1
    assert "tiny-llama: 3 layers × 4 heads" in at.caption[-1].value or any(
        "tiny-llama: 3 layers" in c.value for c in at.caption)


def test_model_that_cannot_load_is_a_message(app, reports_root, tmp_path):
    at = app("heads", reports=reports_root, model=tmp_path / "no-such-model")
    assert not at.exception
    assert any("Attention view" in e and "no-such-model" in e for e in errors(at)), errors(at)
    assert len(at.get("plotly_chart")) == 3  # the report still shows


@pytest.mark.real_model
def test_attention_view_on_smollm2(app, smollm2):
    """The committed SmolLM2 report with the real model: its top induction head on a repeated prompt."""
    from pathlib import Path

    reports = Path(__file__).resolve().parents[2] / "case_studies" / "results" / "head_scans"
    at = app("heads", reports=reports, model="smollm2-135m")
    no_trouble(at)
    assert "smollm2-135m" in at.selectbox(key="heads_report").value.label
    layer, head = at.number_input(key="layer").value, at.number_input(key="head").value
    top = smollm2_top_induction(reports / "smollm2-135m")
    assert (layer, head) == top
    at.text_area(key="prompt").input("The list: apple river candle mouse garden piano. Again: apple river candle mouse garden").run()
    no_trouble(at)
    # An induction head at the last " garden" attends to the token after the earlier " garden".
    assert "attends most to 8: ·piano" in at.markdown[0].value, at.markdown[0].value


def smollm2_top_induction(folder) -> tuple[int, int]:
    from interp.heads import HeadScores

    row = HeadScores.load(folder).top("induction", 1).iloc[0]
    return int(row["layer"]), int(row["head"])


def test_switching_reports_resets_the_views(app, tmp_path):
    from interp.heads import HeadScores

    write_heads(tmp_path / "a")
    HeadScores.from_arrays({"retrieval": np.eye(5, 6)}, model="other").save(tmp_path / "b")
    at = app("heads", reports=tmp_path)
    at.selectbox(key="heads_report").select_index(1).run()
    no_trouble(at)
    assert at.multiselect(key="heatmap_scores").value == ["retrieval"]
    assert "5 layers × 6 heads" in " ".join(c.value for c in at.caption)


def test_a_model_of_a_sweep_shows_side_by_side_with_another(app, tmp_path):
    """A sweep folder (one report per model and heads.parquet): the page offers the other models
    and draws the same score for both."""
    from interp.heads import HeadScores
    from interp.heads.sweep import heads_table

    root = tmp_path / "sweep"
    write_heads(root / "model-a", model="model-a")
    rng = np.random.default_rng(1)
    other = HeadScores.from_arrays({s: rng.uniform(0, 0.2, (2, 4)) for s in ("prev_token", "induction")},
                                   model="model-b")
    other.save(root / "model-b")
    reports = [HeadScores.load(root / "model-a"), other]

    class M:  # what heads_table reads of a sweep's models
        def __init__(self, name):
            self.name, self.revision, self.n_kv_heads = name, "sha256 0", 2

    heads_table([M("model-a"), M("model-b")], reports).to_parquet(root / "heads.parquet")
    at = app("heads", reports=root)
    no_trouble(at)
    at.selectbox(key="compare_model").select("model-b").run()
    at.selectbox(key="compare_score").select("induction").run()
    no_trouble(at)
    specs = [c.proto.spec for c in at.get("plotly_chart")]
    assert any("model-b" in s for s in specs) and any("model-a" in s for s in specs)
