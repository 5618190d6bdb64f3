"""Head-score timelines across training checkpoints: ordering by step, the table, its figure,
bad checkpoint lists, and a scan interrupted between checkpoints that resumes."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from wired_models import tiny_llama_folder

from interp.cli import main
from interp.heads.timeline import (
    Timeline,
    TimelineError,
    checkpoint_step,
    checkpoint_steps,
    expand_globs,
    find_timeline,
)
from interp.results.reading import TIMELINE_COLUMNS

pytestmark = pytest.mark.usefixtures("one_thread")

SMALL = ["--scores", "prev_token,induction", "--lengths", "4,8", "--samples", "2", "--no-causal-checks", "--quiet"]
STEPS = [0, 50, 100, 150]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """Four tiny saved Llamas as the checkpoints of one run: three named by step (so that their
    names sort out of step order) and one whose step is only in its trainer_state.json."""
    root = tmp_path_factory.mktemp("run")
    for step in STEPS[:3]:
        tiny_llama_folder(root / f"checkpoint-{step}", seed=step)
    final = tiny_llama_folder(root / "final", seed=STEPS[3])
    (final / "trainer_state.json").write_text(json.dumps({"global_step": STEPS[3], "log_history": []}))
    return root


def _argv(run, out, *extra):
    return ["heads", str(run / "checkpoint-*"), str(run / "final"), "--out", str(out), *SMALL, *extra]


def test_checkpoint_steps_from_names_and_trainer_state(run, tmp_path):
    assert checkpoint_step(run / "checkpoint-100") == 100
    assert checkpoint_step(run / "final") == 150
    assert [checkpoint_step(n) for n in ("step_20", "ckpt-3", "global_step7", "iter-9", "40", "model-v2")] == \
        [20, 3, 7, 9, 40, None]
    specs = expand_globs([str(run / "checkpoint-*"), str(run / "final")])
    assert [s.rsplit("/", 1)[-1] for s in specs] == ["checkpoint-0", "checkpoint-100", "checkpoint-50", "final"]
    assert [step for step, _ in checkpoint_steps(specs)] == STEPS
    assert checkpoint_steps([str(run / "checkpoint-0"), "smollm2-135m"]) is None  # not a timeline
    with pytest.raises(TimelineError, match="no file or folder matches"):
        expand_globs([str(tmp_path / "nothing-*")])
    twin = tmp_path / "step-50"
    twin.mkdir()
    with pytest.raises(TimelineError, match="two checkpoints are at step 50"):
        checkpoint_steps([str(run / "checkpoint-50"), str(twin)])
    broken = tmp_path / "checkpoint-7"
    broken.mkdir()
    (broken / "trainer_state.json").write_text("{not json")
    with pytest.raises(TimelineError, match="trainer_state.json is not readable"):
        checkpoint_step(broken)


def test_timeline_has_one_row_per_step_layer_head_and_score(run, tmp_path, capsys):
    out = tmp_path / "t"
    assert main(_argv(run, out, "--timeline-scores", "induction")) == 0
    table = pd.read_parquet(out / "timeline.parquet")
    assert list(table.columns) == TIMELINE_COLUMNS
    assert len(table) == len(STEPS) * 3 * 4 * 2  # steps x layers x heads x scores
    assert not table.duplicated(["step", "layer", "head", "score"]).any()
    assert table["step"].is_monotonic_increasing and sorted(set(table["step"])) == STEPS
    meta = json.loads((out / "timeline.json").read_text())
    assert [c["step"] for c in meta["checkpoints"]] == STEPS
    assert [c["folder"] for c in meta["checkpoints"]] == ["checkpoint-0", "checkpoint-50", "checkpoint-100", "final"]
    assert meta["figure_scores"] == ["induction"]
    for c in meta["checkpoints"]:  # the timeline holds exactly each checkpoint's own report
        own = pd.read_parquet(out / c["folder"] / "head_scores.parquet")
        part = table[table["step"] == c["step"]].drop(columns="step").reset_index(drop=True)
        pd.testing.assert_frame_equal(part, own[["layer", "head", "score", "value"]])
    page = (out / "timeline.html").read_text()
    assert "plotly" in page and "max over heads" in page
    assert sorted(p.name for p in out.iterdir()) == [".interp-manifest.json", "checkpoint-0", "checkpoint-100",
                                                     "checkpoint-50", "final", "heads.parquet", "index.html", "timeline.html",
                                                     "timeline.json", "timeline.parquet"]
    assert "timeline:" in capsys.readouterr().out
    loaded = Timeline.load(out)
    assert loaded.steps == STEPS and loaded.folder_of(150) == "final"
    pd.testing.assert_frame_equal(loaded.df, table)
    assert find_timeline(out / "checkpoint-50") == out and find_timeline(run / "checkpoint-50") is None
    fig = loaded.figure(["prev_token"], top=2, step=50)
    assert len(fig.data) == 3  # the maximum over heads and the two top heads


def test_interrupted_timeline_resumes_between_checkpoints(run, tmp_path, monkeypatch):
    from interp.heads import units

    real, calls, armed = units.score_pattern_unit, [], [True]

    def interrupted(model, *args, **kwargs):
        calls.append(model.name)
        if armed[0] and model.name == "checkpoint-100":  # the third checkpoint in step order
            armed[0] = False
            raise KeyboardInterrupt
        return real(model, *args, **kwargs)

    monkeypatch.setattr(units, "score_pattern_unit", interrupted)
    out = tmp_path / "t"
    assert main(_argv(run, out)) == 130
    assert calls == ["checkpoint-0"] * 2 + ["checkpoint-50"] * 2 + ["checkpoint-100"]
    assert not (out / "timeline.parquet").exists()
    calls.clear()
    assert main(_argv(run, out)) == 0
    assert calls == ["checkpoint-100"] * 2 + ["final"] * 2  # the first two came from the checkpoint
    assert not (out / ".interp-checkpoint").exists() and not (out / ".interp.lock").exists()
    fresh = tmp_path / "fresh"
    assert main(_argv(run, fresh)) == 0
    assert (out / "timeline.parquet").read_bytes() == (fresh / "timeline.parquet").read_bytes()
    assert (out / "timeline.json").read_bytes() == (fresh / "timeline.json").read_bytes()


def test_bad_timelines_fail_before_any_work(run, tmp_path, monkeypatch, capsys):
    from interp.heads import units

    monkeypatch.setattr(units, "score_pattern_unit", lambda *a, **k: pytest.fail("work started"))
    out = tmp_path / "t"
    plain = tiny_llama_folder(tmp_path / "model-v2")
    assert main(["heads", str(run / "checkpoint-0"), str(plain), "--out", str(out), *SMALL, "--timeline"]) == 2
    assert "has no trainer_state.json and no step in its name" in capsys.readouterr().err
    assert main(_argv(run, out, "--timeline-scores", "retrieval")) == 2
    assert "unknown timeline score 'retrieval'" in capsys.readouterr().err
    assert main(["heads", str(tmp_path / "ckpts" / "checkpoint-*"), "--out", str(out), *SMALL]) == 2
    assert "no file or folder matches" in capsys.readouterr().err
    assert main(["heads", str(plain), "--out", str(out), *SMALL, "--timeline-scores", "induction"]) == 2
    assert "--timeline-scores draws a timeline" in capsys.readouterr().err
    assert not out.exists()
