"""Head-scores page on a timeline of checkpoints: the step slider picks a checkpoint's report and
marks it on the scores-against-step figure."""

from __future__ import annotations

import json

import numpy as np
from app_checks import errors, no_trouble


def write_timeline(root, steps=(0, 100, 200)):
    """Three checkpoints' reports and their timeline; the induction head L2H1 forms over the run
    (0.05, 0.45, 0.85) while L0H2 stays at 0.3."""
    from interp.heads import HeadScores
    from interp.heads.timeline import Timeline

    reports = []
    for i, step in enumerate(steps):
        rng = np.random.default_rng(i)
        arrays = {s: rng.uniform(0, 0.2, (3, 4)) for s in ("prev_token", "induction")}
        arrays["induction"][0, 2] = 0.3
        arrays["induction"][2, 1] = 0.05 + 0.4 * i
        scores = HeadScores.from_arrays(arrays, model=f"checkpoint-{step}", settings={"seed": 0})
        scores.save(root / f"checkpoint-{step}")
        reports.append((step, f"checkpoint-{step}", scores))
    Timeline.from_reports(reports, figure_scores=["induction"]).save(root)
    return root


def _top(at):
    table = at.dataframe[0].value
    return int(table.loc[0, "layer"]), int(table.loc[0, "head"])


def test_step_slider_moves_through_the_checkpoints(app, tmp_path):
    root = write_timeline(tmp_path / "run")
    at = app("heads", reports=tmp_path)
    no_trouble(at)
    slider = at.select_slider(key="timeline_step")
    assert slider.value == 0 and list(slider.options) == ["0", "100", "200"]
    assert _top(at) == (0, 2)  # before the induction head forms
    assert any("at step 0 (3 checkpoints)" in c.value for c in at.caption)
    timeline = [c for c in at.get("plotly_chart") if "max over heads" in c.proto.spec]
    assert len(timeline) == 1 and "L2H1" in timeline[0].proto.spec
    at.select_slider(key="timeline_step").set_value(200).run()
    no_trouble(at)
    assert _top(at) == (2, 1)  # the formed induction head leads at the last step
    assert any("checkpoint-200 at step 200" in c.value for c in at.caption)
    # Picking another checkpoint's report starts the slider at its step.
    at.selectbox(key="heads_report").select_index(1).run()
    no_trouble(at)
    assert at.select_slider(key="timeline_step").value == 100
    assert abs(at.dataframe[0].value.query("layer == 2 and head == 1")["induction"].iloc[0] - 0.45) < 1e-9
    assert (root / "timeline.json").is_file()


def test_plain_report_has_no_slider_and_a_broken_timeline_is_a_warning(app, tmp_path, reports_root):
    at = app("heads", reports=reports_root)
    no_trouble(at)
    assert not at.select_slider
    root = write_timeline(tmp_path / "run")
    (root / "timeline.parquet").write_bytes(b"not parquet")
    at = app("heads", reports=tmp_path)
    assert not at.exception and not errors(at)
    assert any("cannot read the timeline" in w.value for w in at.warning)
    assert not at.select_slider and len(at.dataframe) == 1  # the checkpoint's own report still shows
    assert json.loads((root / "timeline.json").read_text())["figure_scores"] == ["induction"]
