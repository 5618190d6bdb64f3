"""``interp heads`` end to end on tiny local Hugging Face folders: the report files, several
models with an index, bad input that leaves nothing behind, and an interrupted run that resumes."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from wired_models import tiny_llama_folder

from interp.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")


SMALL = ["--lengths", "4,8", "--samples", "2", "--text-tokens", "32", "--text-samples", "2", "--window", "16",
         "--streaming-tokens", "48", "--quiet"]


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """Two tiny Llamas with a 256-token window and one with a 64-token window."""
    root = tmp_path_factory.mktemp("models")
    return {name: tiny_llama_folder(root / name, n_ctx=ctx, seed=seed)
            for name, ctx, seed in (("tiny-a", 256, 0), ("tiny-b", 256, 1), ("tiny-short", 64, 2))}


def test_cli_heads_writes_the_report(folders, tmp_path, capsys):
    out = tmp_path / "r"
    code = main(["heads", str(folders["tiny-a"]), "--out", str(out), *SMALL,
                 "--retrieval-lengths", "100", "--retrieval-depths", "0.5", "--mask-k", "2"])
    assert code == 0
    assert sorted(p.name for p in out.iterdir()) == [".interp-manifest.json", "head_scores.json", "head_scores.parquet",
                                                     "report.html"]  # the checkpoint and the lock are gone
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r"]
    data = json.loads((out / "head_scores.json").read_text())
    assert {"model", "settings", "versions", "scores"} <= set(data) and data["model"] == "tiny-a"
    assert data["settings"]["lengths"] == [4, 8] and data["settings"]["retrieval"]["depths"] == [0.5]
    assert all(set(row) == {"score", "layer", "head", "value"} for row in data["scores"])
    names = {row["score"] for row in data["scores"]}
    assert {"prev_token", "duplicate", "induction", "retrieval", "streaming", "ngram1", "ngram2", "ngram3",
            "ngram4"} <= names
    assert data["shape"] == {"layers": 3, "heads": 4, "kv_heads": 2, "sliding_windows": {}}
    assert len(data["scores"]) == len(names) * 3 * 4  # every score for each of 3 layers x 4 heads
    assert data["checks"]["retrieval_tests"]["tests"] == 3  # three needles at one length and depth
    assert "induction_ablation" in data["checks"] and "retrieval_masking" in data["checks"]
    table = pd.read_parquet(out / "head_scores.parquet")
    assert list(table.columns) == ["score", "layer", "head", "value"] and len(table) == len(data["scores"])
    page = (out / "report.html").read_text()
    assert "plotly" in page and "Needle tests" in page and "Induction: mean-ablation" in page
    assert "tiny-a: wrote" in capsys.readouterr().out


def test_cli_heads_several_models_write_a_folder_each_and_an_index(folders, tmp_path):
    out = tmp_path / "r"
    code = main(["heads", str(folders["tiny-a"]), str(folders["tiny-b"]), "--out", str(out), *SMALL,
                 "--scores", "prev_token,ngram", "--no-causal-checks"])
    assert code == 0
    assert sorted(p.name for p in out.iterdir()) == [".interp-manifest.json", "heads.parquet", "index.html", "tiny-a",
                                                     "tiny-b"]
    table = pd.read_parquet(out / "heads.parquet")
    assert list(table.columns) == ["model", "revision", "layer", "head", "kv_head", "score", "value"]
    assert set(table["model"]) == {"tiny-a", "tiny-b"} and table["revision"].str.startswith("sha256 ").all()
    assert (table["kv_head"] == table["head"] // 2).all()  # 4 query heads share 2 kv heads
    for name in ("tiny-a", "tiny-b"):
        assert sorted(p.name for p in (out / name).iterdir()) == [".interp-manifest.json", "head_scores.json",
                                                                  "head_scores.parquet", "report.html"]
        data = json.loads((out / name / "head_scores.json").read_text())
        assert data["model"] == name and "ngram4" in {row["score"] for row in data["scores"]}
    index = (out / "index.html").read_text()
    assert "tiny-a/report.html" in index and "tiny-b/report.html" in index


def test_cli_bad_input_leaves_neither_report_nor_checkpoint(folders, tmp_path, monkeypatch, capsys):
    from interp.heads import units

    monkeypatch.setattr(units, "score_pattern_unit", lambda *a, **k: pytest.fail("work started"))
    out = tmp_path / "r"
    # Natural-text windows longer than the context window.
    assert main(["heads", str(folders["tiny-a"]), "--out", str(out), *SMALL, "--text-tokens", "300"]) == 2
    assert "context window of 256" in capsys.readouterr().err
    # The second model's window is too short: the first is not scanned either.
    assert main(["heads", str(folders["tiny-a"]), str(folders["tiny-short"]), "--out", str(out), *SMALL,
                 "--scores", "induction_text", "--text-tokens", "100"]) == 2
    assert "tiny-short's context window of 64" in capsys.readouterr().err
    # Needle haystacks longer than the second model's window.
    assert main(["heads", str(folders["tiny-a"]), str(folders["tiny-short"]), "--out", str(out), *SMALL,
                 "--scores", "retrieval", "--retrieval-lengths", "100", "--mask-k", "2"]) == 2
    assert "exceed tiny-short's context window" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_cli_interrupted_run_keeps_its_checkpoint_and_resumes(folders, tmp_path, monkeypatch):
    from interp.heads import units

    real, calls, armed = units.score_pattern_unit, [], [True]

    def interrupted(*args, **kwargs):
        calls.append(args[1])
        if armed[0] and len(calls) == 2:
            armed[0] = False
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(units, "score_pattern_unit", interrupted)
    out = tmp_path / "r"
    partial = out / ".interp-checkpoint"
    argv = ["heads", str(folders["tiny-a"]), "--out", str(out), *SMALL, "--scores", "induction", "--no-causal-checks"]
    assert main(argv) == 130  # interrupted: one line, no traceback
    assert len(list(partial.glob("*.safetensors"))) == 1  # one unit finished
    assert sorted(p.name for p in out.iterdir()) == [".interp-checkpoint"]  # no report, no lock, no staging
    calls.clear()
    assert main(argv) == 0
    assert len(calls) == 1  # the random unit of length 8; length 4 came from the checkpoint
    assert (out / "report.html").is_file() and not partial.exists()


def test_cli_exports_the_kv_pattern_as_kvpress_reads_it(folders, tmp_path, monkeypatch):
    """``--export kv-pattern``: DuoAttention's two files in ``kv_pattern/``, read back with the
    rules of kvpress's ``DuoAttentionPress.load_attention_pattern`` (tab-separated floats clipped
    to 0..1; ``sink_size``, ``recent_size``), and its choice of streaming heads (the
    ``round(ratio * n)`` lowest) is the complement of ``HeadScores.keep_full`` on the report."""
    import io

    import numpy as np

    from interp.heads.table import HeadScores

    out = tmp_path / "r"
    args = ["heads", str(folders["tiny-a"]), "--out", str(out), *SMALL, "--scores", "retrieval,streaming",
            "--retrieval-lengths", "100", "--retrieval-depths", "0.5", "--no-causal-checks", "--export", "kv-pattern"]
    # a random tiny model recalls no needle, so it has no retrieval score to export: an error, nothing written
    assert main(args) == 2 and not (out / "kv_pattern").exists() and not (out / "report.html").exists()
    # counted as recalled, its tests give copy scores
    monkeypatch.setattr("interp.heads.retrieval.rouge1_recall", lambda reference, response: 1.0)
    out = tmp_path / "r2"
    assert main([*args[:2], "--out", str(out), *args[4:]]) == 0
    folder = out / "kv_pattern"
    assert sorted(p.name for p in folder.iterdir()) == [".interp-manifest.json", "config.json",
                                                        "full_attention_heads.tsv"]
    config = json.loads((folder / "config.json").read_text())
    assert (config["sink_size"], config["recent_size"]) == (4, 16)
    values = np.clip(np.loadtxt(io.StringIO((folder / "full_attention_heads.tsv").read_text()), dtype=float,
                                delimiter="\t"), 0, 1)
    scores = HeadScores.load(out)
    assert values.shape == (3, 2)
    want = scores.matrix("retrieval").reshape(3, 2, 2).max(-1)  # a kv head: its query group's highest
    np.testing.assert_allclose(values, want, atol=1e-6)
    values = values + np.arange(6).reshape(3, 2) * 1e-9  # kvpress breaks no ties; make the order unique
    for ratio in (0.0, 0.5, 1.0):
        n = round(values.size * ratio)
        streaming = np.zeros(values.shape, dtype=bool)
        streaming[np.unravel_index(np.argsort(values, axis=None)[:n], values.shape)] = True
        scores.matrix("retrieval")  # the same table the CLI exported
        keep = scores.keep_full("retrieval", 1 - ratio)
        if len(set(want.ravel())) == want.size:
            assert np.array_equal(keep, ~streaming)
        assert keep.sum() == values.size - n


def test_cli_export_needs_the_retrieval_score(folders, tmp_path, capsys):
    out = tmp_path / "r"
    assert main(["heads", str(folders["tiny-a"]), "--out", str(out), *SMALL, "--scores", "induction",
                 "--export", "kv-pattern"]) == 2
    assert "add retrieval to --scores" in capsys.readouterr().err
    assert main(["heads", str(folders["tiny-a"]), "--out", str(out), *SMALL, "--export", "kv-patern"]) == 2
    assert "valid exports: kv-pattern" in capsys.readouterr().err
    assert not out.exists()
