"""Outputs never destroy what interp did not write: users' files in an output folder survive,
an existing file is never turned into a folder, checkpoints are only cleared where interp
stamped them, concurrent runs on one folder fail at once, and a killed-then-resumed scan
writes a report byte-identical to a clean run's."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest
import torch
from wired_models import tiny_llama_folder

import interp
from interp.cli import main
from interp.heads.checkpoint import Checkpoint
from interp.results.folders import LOCK, MANIFEST, OutputError, output_folder

# raw_files: these tests write arbitrary bytes as files (no strict-JSON check)
pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.raw_files]

SMALL = ["--lengths", "4,8", "--samples", "2", "--text-tokens", "32", "--text-samples", "2", "--window", "16",
         "--streaming-tokens", "48", "--quiet"]


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    return tiny_llama_folder(tmp_path_factory.mktemp("models") / "tiny-a", n_ctx=256, seed=0)


@pytest.fixture(scope="module")
def tiny_scores(tiny_folder):
    model = interp.load(tiny_folder)
    return interp.heads.scan(model, ["prev_token"], lengths=[4], samples=2, causal_checks=False, progress=False)


def hidden_leftovers(root):
    """Hidden temporaries anywhere under ``root`` (staging folders, temp siblings, locks)."""
    return sorted(str(p.relative_to(root)) for p in root.rglob(".*")
                  if ".tmp-" in p.name or p.name.startswith(".interp-staging") or p.name == LOCK)


# -- 1. a user's files survive ----------------------------------------------------------------------
def test_cli_heads_refuses_a_folder_with_a_user_file_and_keeps_it(tiny_folder, tmp_path, capsys):
    out = tmp_path / "x"
    out.mkdir()
    (out / "thesis.txt").write_text("draft")
    assert main(["heads", str(tiny_folder), "--out", str(out), *SMALL, "--scores", "prev_token"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("interp heads: error: refusing to write into") and "thesis.txt" in err and "--force" in err
    assert err.count("\n") == 1
    assert sorted(p.name for p in out.iterdir()) == ["thesis.txt"]


def test_cli_heads_force_writes_beside_a_user_file(tiny_folder, tmp_path):
    out = tmp_path / "x"
    out.mkdir()
    (out / "thesis.txt").write_text("draft")
    assert main(["heads", str(tiny_folder), "--out", str(out), *SMALL, "--scores", "prev_token", "--force"]) == 0
    assert (out / "thesis.txt").read_text() == "draft"
    assert {"head_scores.json", "head_scores.parquet", "report.html", "thesis.txt", MANIFEST} == {
        p.name for p in out.iterdir()}
    # A second run replaces its own files and still leaves the user's alone.
    assert main(["heads", str(tiny_folder), "--out", str(out), *SMALL, "--scores", "prev_token", "--force"]) == 0
    assert (out / "thesis.txt").read_text() == "draft"
    assert hidden_leftovers(tmp_path) == []


def test_a_rerun_into_its_own_folder_needs_no_force_and_drops_its_stale_files(tmp_path):
    out = tmp_path / "r"
    with output_folder(out) as o:
        o.write_text("a.json", "1")
        o.write_text("b.json", "2")
    with output_folder(out) as o:
        o.write_text("a.json", "3")
    assert sorted(p.name for p in out.iterdir()) == [MANIFEST, "a.json"]
    assert (out / "a.json").read_text() == "3"
    assert list(json.loads((out / MANIFEST).read_text())["files"]) == ["a.json"]


def test_a_partial_rerun_keeps_the_files_it_names(tmp_path):
    """A summary rendered again from saved tables keeps the tables (``keep``), still listed as the
    report's; a kept name that is not the report's own file stays untouched and unlisted."""
    out = tmp_path / "r"
    with output_folder(out, kind="study") as o:
        o.write_text("table.parquet", "rows")
        o.write_text("summary.md", "old")
        o.write_text("figure.html", "old figure")
    (out / "notes.txt").write_text("mine")
    with output_folder(out, kind="study", force=True) as o:
        o.keep("table.parquet", "notes.txt")
        o.write_text("summary.md", "new")
    assert sorted(p.name for p in out.iterdir()) == [MANIFEST, "notes.txt", "summary.md", "table.parquet"]
    assert (out / "table.parquet").read_text() == "rows" and (out / "notes.txt").read_text() == "mine"
    assert sorted(json.loads((out / MANIFEST).read_text())["files"]) == ["summary.md", "table.parquet"]
    with output_folder(out, kind="study", force=True) as o:  # without keep: the table is this kind's stale file
        o.write_text("summary.md", "newer")
    assert sorted(p.name for p in out.iterdir()) == [MANIFEST, "notes.txt", "summary.md"]


def test_kind_for_makes_a_valid_kind_from_any_name():
    from interp.results.folders import kind_for

    for name in ("main_job_long_cpu", "Triton-AOT.v2", "123", "", "x" * 80, "é"):
        kind = kind_for(name)
        with output_folder(tmp := Path(tempfile.mkdtemp()) / "o", kind=kind) as o:  # accepted as a kind
            o.write_text("f.txt", name)
        assert json.loads((tmp / MANIFEST).read_text())["files"]["f.txt"]["kind"] == kind
    assert kind_for("main_job_long_cpu") == "main_job_long_cpu"


def test_head_scores_save_keeps_a_user_file(tiny_scores, tmp_path):
    folder = tmp_path / "x"
    folder.mkdir()
    (folder / "thesis.txt").write_text("draft")
    with pytest.raises(OutputError, match="thesis.txt"):
        tiny_scores.save(folder)
    assert [p.name for p in folder.iterdir()] == ["thesis.txt"]
    tiny_scores.save(folder, force=True)
    assert (folder / "thesis.txt").read_text() == "draft" and (folder / "head_scores.json").is_file()
    again = interp.heads.HeadScores.load(folder)
    assert again.df.equals(tiny_scores.df)


def test_knob_and_icl_writers_keep_a_user_file(tmp_path):
    import pandas as pd

    from interp.circuits.report import ICLResult
    from interp.neurons.report import write_report as write_neurons

    for name, write in (
        ("icl", lambda f, **kw: ICLResult("m", {}, n_layers=1, n_heads=1).save(f, **kw)),
        ("neurons", lambda f, **kw: write_neurons(pd.DataFrame({"layer": [0], "neuron": [0], "rank": [1], "token": ["a"],
                                                                "token_id": [1], "prob": [0.5]}), f, "t", **kw)),
    ):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "notes.md").write_text("mine")
        with pytest.raises(OutputError, match="notes.md"):
            write(folder)
        assert [p.name for p in folder.iterdir()] == ["notes.md"]
        write(folder, force=True)
        assert (folder / "notes.md").read_text() == "mine"


def test_an_existing_file_is_never_turned_into_a_folder(tiny_folder, tiny_scores, tmp_path, capsys):
    target = tmp_path / "results.txt"
    target.write_text("precious")
    assert main(["heads", str(tiny_folder), "--out", str(target), *SMALL, "--scores", "prev_token"]) == 2
    assert "is an existing file" in capsys.readouterr().err
    with pytest.raises(OutputError, match="existing file"):
        tiny_scores.save(target)
    assert target.read_text() == "precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.txt"]  # no hidden temporary either


def test_out_dot_in_a_working_folder_with_files_is_refused(tiny_folder, tmp_path, monkeypatch, capsys):
    (tmp_path / "paper.tex").write_text("x")
    monkeypatch.chdir(tmp_path)
    assert main(["heads", str(tiny_folder), "--out", ".", *SMALL, "--scores", "prev_token"]) == 2
    assert "paper.tex" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["paper.tex"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_parent_is_found_before_any_work(tiny_folder, tmp_path, monkeypatch, capsys):
    from interp.heads import units

    monkeypatch.setattr(units, "score_pattern_unit", lambda *a, **k: pytest.fail("work started"))
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        assert main(["heads", str(tiny_folder), "--out", str(ro / "r"), *SMALL]) == 2
        assert "not writable" in capsys.readouterr().err
    finally:
        ro.chmod(0o755)


def test_a_read_only_parent_is_refused_even_as_root(tmp_path, monkeypatch):
    # As root the permission bits do not stop writes; the check reads them through os.access.
    monkeypatch.setattr(os, "access", lambda path, mode: False)
    with pytest.raises(OutputError, match="not writable"), output_folder(tmp_path / "r"):
        pytest.fail("entered")
    assert not (tmp_path / "r").exists()


# -- checkpoints ----------------------------------------------------------------------------------
def test_checkpoint_refuses_a_foreign_folder_and_a_file(tmp_path):
    folder = tmp_path / "ck"
    folder.mkdir()
    (folder / "data.csv").write_text("1,2")
    with pytest.raises(OutputError, match="did not write"):
        Checkpoint(folder, {"a": 1})
    assert (folder / "data.csv").read_text() == "1,2"
    file = tmp_path / "ck.txt"
    file.write_text("x")
    with pytest.raises(OutputError, match="existing file"):
        Checkpoint(file, {"a": 1})
    assert file.read_text() == "x"


def test_scan_checkpoint_argument_refuses_a_user_folder(tiny_folder, tmp_path):
    model = interp.load(tiny_folder)
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "keep.txt").write_text("x")
    with pytest.raises(OutputError):
        interp.heads.scan(model, ["prev_token"], lengths=[4], samples=2, causal_checks=False, progress=False,
                          checkpoint=str(folder))
    assert [p.name for p in folder.iterdir()] == ["keep.txt"]


def test_checkpoint_with_other_settings_clears_only_its_own_files(tmp_path):
    folder = tmp_path / "ck"
    ck = Checkpoint(folder, {"a": 1})
    ck.put("u1", {"x": torch.ones(2)})
    (folder / "notes.txt").write_text("a user note dropped in later")
    again = Checkpoint(folder, {"a": 2})
    assert again.get("u1") is None
    assert (folder / "notes.txt").read_text() == "a user note dropped in later"


# -- 3. one run per output folder -----------------------------------------------------------------
def test_a_second_run_on_a_locked_folder_fails_at_once(tiny_folder, tmp_path, capsys):
    out = tmp_path / "r"
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import sys, time
            from interp.results.folders import output_folder
            with output_folder({str(out)!r}):
                print("ready", flush=True)
                time.sleep(60)
        """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        assert main(["heads", str(tiny_folder), "--out", str(out), *SMALL, "--scores", "prev_token"]) == 2
        err = capsys.readouterr().err
        assert "another interp run is writing to" in err and err.count("\n") == 1
    finally:
        holder.kill()
        holder.wait()
    # The killed holder's lock is not held by anyone: the next run proceeds and cleans up.
    assert main(["heads", str(tiny_folder), "--out", str(out), *SMALL, "--scores", "prev_token"]) == 0
    assert hidden_leftovers(tmp_path) == []


def test_nested_writers_in_one_process_also_collide(tmp_path):
    with output_folder(tmp_path / "r"):
        with pytest.raises(OutputError, match="another interp run"), output_folder(tmp_path / "r"):
            pass


def test_a_failed_run_leaves_the_previous_report_and_no_temporaries(tmp_path):
    out = tmp_path / "r"
    with output_folder(out) as o:
        o.write_text("a.json", "old")
    with pytest.raises(RuntimeError), output_folder(out) as o:
        o.write_text("a.json", "new")
        raise RuntimeError("crash mid-report")
    assert (out / "a.json").read_text() == "old"
    assert hidden_leftovers(tmp_path) == []
    with pytest.raises(RuntimeError), output_folder(tmp_path / "fresh"):
        raise RuntimeError("crash before anything landed")
    assert not (tmp_path / "fresh").exists()


# -- 9. a resumed report is byte-identical ---------------------------------------------------------
def test_killed_then_resumed_scan_writes_the_same_bytes_as_a_clean_run(tiny_folder, tmp_path, monkeypatch):
    from interp.heads import units

    argv = ["heads", str(tiny_folder), *SMALL, "--retrieval-lengths", "100", "--retrieval-depths", "0.5",
            "--mask-k", "2"]
    assert main([*argv, "--out", str(tmp_path / "clean")]) == 0

    real, calls = units.score_pattern_unit, []

    def killed(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(units, "score_pattern_unit", killed)
    assert main([*argv, "--out", str(tmp_path / "resumed")]) == 130
    monkeypatch.setattr(units, "score_pattern_unit", real)
    assert main([*argv, "--out", str(tmp_path / "resumed")]) == 0
    for name in ("head_scores.json", MANIFEST):
        assert (tmp_path / "resumed" / name).read_bytes() == (tmp_path / "clean" / name).read_bytes()
