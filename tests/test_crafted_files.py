"""Crafted result files are refused with a clear error, and every string that reaches a page is escaped.

Each case saves a valid result, copies its files (not the writer's manifest) into a new folder,
changes one thing there as a hand-edited or hostile file would, and reads it back: the read
raises ``BadReportError`` naming the file and the field (``interp.results.reading``). Pages written
from a result that holds markup in every string show it as text, and a page written twice from
the same result is the same bytes.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pytest

from interp.errors import BadInputError, BadReportError, InterpError

PAYLOAD = "<script>alert(1)</script>"


def craft(src: Path, dest: Path, name: str, change: Callable[[Any], Any] | None = None, *, text: str | None = None) -> Path:
    """``src``'s files copied to ``dest`` with ``name`` changed: ``change(doc)`` edits the JSON (or
    returns a new one), ``text`` replaces the file's text."""
    dest.mkdir(parents=True)
    for p in src.iterdir():
        if p.is_file() and not p.name.startswith("."):
            shutil.copy(p, dest / p.name)
    path = dest / name
    if text is not None:
        path.write_text(text)
    elif change is not None:
        doc = json.loads(path.read_text())
        out = change(doc)
        path.write_text(json.dumps(doc if out is None else out))
    return dest


def set_in(path: str, value: Any) -> Callable[[Any], None]:
    """A change setting ``doc[a][b]...`` (``path`` "a.b.0.c") to ``value``."""
    keys = [int(k) if k.isdigit() else k for k in path.split(".")]

    def change(doc: Any) -> None:
        for k in keys[:-1]:
            doc = doc[k]
        doc[keys[-1]] = value

    return change


def drop(path: str) -> Callable[[Any], None]:
    keys = [int(k) if k.isdigit() else k for k in path.split(".")]

    def change(doc: Any) -> None:
        for k in keys[:-1]:
            doc = doc[k]
        del doc[keys[-1]]

    return change


# -- head scores ---------------------------------------------------------------------------------
def head_scores(model: str = "tiny", **kwargs: Any):
    from interp.heads.table import HeadScores

    rng = np.random.default_rng(0)
    arrays = {s: rng.uniform(0, 1, (3, 4)) for s in ("induction", "retrieval")}
    checks = {
        "induction_ablation": {"k": 2, "length": 20, "samples": 4, "seed": 1000, "clean_loss": 1.0,
                               "top_heads": [{"layer": 2, "head": 1}, {"layer": 1, "head": 0}], "top_ablated_loss": 3.0,
                               "random_ablated_loss": {"0": 1.1, "1": 1.2}, "random_heads": {"0": [{"layer": 0, "head": 3}]},
                               "loss_increase_top": 2.0, "loss_increase_random_mean": 0.15},
        "retrieval_masking": {"k": 1, "top_heads": [{"layer": 2, "head": 3}], "recall": {"none": 0.9, "top": 0.1}},
        "retrieval_tests": {"tests": 2, "recalled": 1, "threshold": 0.1, "recall_threshold": 0.5,
                            "share_above_threshold": 0.25,
                            "per_test": [{"needle": 0, "length": 100, "depth": 0.5, "recall": 1.0, "recalled": True,
                                          "response": "paprika"},
                                         {"needle": 0, "length": 100, "depth": 1.0, "recall": 0.0, "recalled": False,
                                          "response": "soup"}]},
    }
    return HeadScores.from_arrays(arrays, model=model, settings={"seed": 0, "haystack": "alice"}, checks=checks,
                                  versions={"interp": "0"}, kv_heads=2, sliding_windows={0: 8}, **kwargs)


@pytest.fixture
def heads_folder(tmp_path) -> Path:
    return head_scores().save(tmp_path / "saved")


HEAD_CASES = {
    "layer -1": (set_in("scores.0.layer", -1), r"scores\[0\]\.layer is -1; valid: a layer in 0\.\.2 \(shape\.layers is 3\)"),
    "head -1": (set_in("scores.0.head", -1), r"scores\[0\]\.head is -1; valid: a head in 0\.\.3 \(shape\.heads is 4\)"),
    "layer 99": (set_in("scores.0.layer", 99), r"scores\[0\]\.layer is 99; valid: a layer in 0\.\.2 \(shape\.layers is 3\)"),
    "head 4": (set_in("scores.5.head", 4), r"scores\[5\]\.head is 4; valid: a head in 0\.\.3 \(shape\.heads is 4\)"),
    "kv_heads 0": (set_in("shape.kv_heads", 0), r"shape\.kv_heads is 0; valid: an integer 1\.\.4"),
    "kv_heads 3": (set_in("shape.kv_heads", 3), r"shape\.kv_heads is 3; valid: a divisor of shape\.heads \(4\): 1, 2, 4"),
    "value a string": (set_in("scores.0.value", "0.5"), r"scores\[0\]\.value is '0\.5' \(a string\); valid: a finite number or null"),
    "value a boolean": (set_in("scores.0.value", True), r"scores\[0\]\.value is True \(a boolean\)"),
    "layer a string": (set_in("scores.0.layer", "1"), r"scores\[0\]\.layer is '1' \(a string\); valid: an integer"),
    "layer a float": (set_in("scores.0.layer", 0.5), r"scores\[0\]\.layer is 0\.5; valid: an integer"),
    "layer 10**30": (set_in("scores.0.layer", 10**30), r"scores\[0\]\.layer is 10+; valid: a layer in 0\.\.2"),
    "shape a string": (set_in("shape.layers", "3"), r"shape\.layers is '3' \(a string\); valid: an integer 1\.\.4096"),
    "huge shape": (set_in("shape.layers", 10**12), r"shape\.layers is 1000000000000; valid: an integer 1\.\.4096"),
    "huge grid": (lambda d: d["shape"].update(layers=4096, heads=4096), r"shape is 4096 layers × 4096 heads; valid: at most"),
    "missing scores": (drop("scores"), r"the document lacks 'scores'"),
    "missing model": (drop("model"), r"the document lacks 'model'"),
    "missing value": (drop("scores.3.value"), r"scores\[3\] lacks 'value'"),
    "scores not a list": (set_in("scores", {"a": 1}), r"scores is an object with 1 keys; valid: a list"),
    "document a list": (lambda d: [d], r"the document is a list of 1 items; valid: an object"),
    "repeated head": (lambda d: d["scores"].append(dict(d["scores"][0])), r"a second 'induction' value of layer 0 head 0"),
    "empty score name": (set_in("scores.0.score", ""), r"scores\[0\]\.score is '' \(a string\); valid: a non-empty string"),
    "window layer 99": (set_in("shape.sliding_windows", {"99": 8}), r"a key of shape\.sliding_windows is '99'; valid: a layer in 0\.\.2"),
    "window layer -1": (set_in("shape.sliding_windows", {"-1": 8}), r"a key of shape\.sliding_windows is '-1'"),
    "window 0": (set_in("shape.sliding_windows", {"0": 0}), r"shape\.sliding_windows\['0'\] is 0; valid: an integer at least 1"),
    "checks: recalled a string": (set_in("checks.retrieval_tests.recalled", PAYLOAD),
                                  r"checks\.retrieval_tests\.recalled is '<script>.*valid: an integer 0\.\.2"),
    "checks: tests a string": (set_in("checks.retrieval_tests.tests", PAYLOAD), r"checks\.retrieval_tests\.tests is '<script>"),
    "checks: threshold a string": (set_in("checks.retrieval_tests.threshold", PAYLOAD),
                                   r"checks\.retrieval_tests\.threshold is '<script>"),
    "checks: more recalled than tests": (set_in("checks.retrieval_tests.recalled", 5), r"recalled is 5; valid: an integer 0\.\.2"),
    "checks: top head outside": (set_in("checks.induction_ablation.top_heads.0.layer", 7),
                                 r"checks\.induction_ablation\.top_heads\[0\]\.layer is 7; valid: a layer in 0\.\.2"),
    "checks: per_test lacks response": (drop("checks.retrieval_tests.per_test.1.response"),
                                        r"checks\.retrieval_tests\.per_test\[1\] lacks 'response'"),
    "checks: masking neither recall nor skipped": (set_in("checks.retrieval_masking", {"k": 1}),
                                                   r"checks\.retrieval_masking lacks 'skipped'"),
    "checks: loss a string": (set_in("checks.induction_ablation.clean_loss", "1"), r"clean_loss is '1' \(a string\)"),
}


@pytest.mark.parametrize("case", sorted(HEAD_CASES))
def test_crafted_head_scores_are_refused(case, heads_folder, tmp_path):
    from interp.heads.table import HeadScores

    change, message = HEAD_CASES[case]
    folder = craft(heads_folder, tmp_path / "crafted", "head_scores.json", change)
    with pytest.raises(BadReportError, match=message) as err:
        HeadScores.load(folder)
    assert str(folder / "head_scores.json") in str(err.value)  # the message names the file
    assert isinstance(err.value, InterpError) and isinstance(err.value, ValueError)


@pytest.mark.parametrize("text, message", [
    ('{"model": "m", "scores": [{"score": "a", "layer": 0, "head": 0, "value": NaN}]}', r"not strict JSON \(it holds NaN"),
    ('{"model": "m", "scores": [{"score": "a", "layer": 0, "head": 0, "value": Infinity}]}', r"holds Infinity"),
    ('{"model": "m", "scores": [{"score": "a", "layer": 0, "head": 0, "value": 1e400}]}', r"holds the number 1e400"),
    ('{"model": "m", "scores": [{"score": "a", "layer": 0, "head": 0, "value": -1e999}]}', r"holds the number -1e999"),
    ('{"model": "m", "scores": [', r"cannot read .*head_scores\.json: not strict JSON"),
    ("[" * 100_000 + "]" * 100_000, r"nests its JSON too deeply|not strict JSON"),
])
def test_non_finite_and_broken_json_is_refused(text, message, heads_folder, tmp_path):
    from interp.heads.table import HeadScores

    folder = craft(heads_folder, tmp_path / "crafted", "head_scores.json", text=text)
    with pytest.raises(BadReportError, match=message):
        HeadScores.load(folder)


def test_sizes_are_bounded_before_reading(heads_folder, tmp_path, monkeypatch):
    from interp.heads.table import HeadScores
    from interp.results import reading

    monkeypatch.setattr(reading, "MAX_JSON_BYTES", 100)
    with pytest.raises(BadReportError, match=r"head_scores\.json is \d+ bytes; valid: a report file of at most 100 bytes"):
        HeadScores.load(heads_folder)
    monkeypatch.undo()
    (tmp_path / "gone").mkdir()
    with pytest.raises(BadReportError, match="no head_scores.json in"):
        HeadScores.load(tmp_path / "gone")


def test_a_report_without_shape_takes_it_from_its_rows_and_stays_bounded(heads_folder, tmp_path):
    from interp.heads.table import HeadScores

    def no_shape(doc):
        del doc["shape"]
        doc["checks"] = {}

    old = HeadScores.load(craft(heads_folder, tmp_path / "old", "head_scores.json", no_shape))
    assert (old.n_layers, old.n_heads, old.kv_heads) == (3, 4, None)

    def negative(doc):
        no_shape(doc)
        doc["scores"][2]["layer"] = -1

    with pytest.raises(BadReportError, match=r"scores\[2\]\.layer is -1; valid: an integer at least 0 \(no shape is recorded\)"):
        HeadScores.load(craft(heads_folder, tmp_path / "negative", "head_scores.json", negative))

    def far(doc):
        no_shape(doc)
        doc["scores"].append({"score": "induction", "layer": 4000, "head": 4000, "value": 1.0})

    with pytest.raises(BadReportError, match=r"shape is 4001 layers × 4001 heads; valid: at most 1048576 heads"):
        HeadScores.load(craft(heads_folder, tmp_path / "far", "head_scores.json", far))


def test_valid_report_reads_back_unchanged(heads_folder):
    from interp.heads.table import HeadScores

    saved = head_scores()
    loaded = HeadScores.load(heads_folder)
    assert loaded.to_dict() == saved.to_dict()
    assert (loaded.kv_heads, loaded.sliding_windows) == (2, {0: 8})


@pytest.mark.parametrize("folder", ["gemma3-270m", "smollm2-135m"])
def test_committed_reports_read_back(folder):
    from interp.circuits.report import ICLResult
    from interp.heads.table import HeadScores
    from interp.probes.knob import KnobResult

    root = Path(__file__).resolve().parents[1] / "case_studies" / "results"
    assert HeadScores.load(root / "head_scans" / folder).n_layers > 0
    assert len(ICLResult.load(root / "icl_circuit" / folder).tables["heads"]) > 0
    assert KnobResult.load(root / "knob" / folder).layer >= 0


# -- kv_pattern and keep_full with another model ---------------------------------------------------
def _model(layers: int = 3, heads: int = 4, kv: int = 2, name: str = "other"):
    return SimpleNamespace(cfg=SimpleNamespace(n_layers=layers, n_heads=heads, n_kv_heads=kv), name=name)


@pytest.mark.parametrize("model, windows, message", [
    (_model(kv=4), {0: 8}, r"other has 4 kv heads per layer but these scores of tiny were scanned with 2"),
    (_model(kv=1), {0: 8}, r"has 1 kv heads per layer"),
    (_model(), {}, r"sliding-window layers none but these scores of tiny were scanned with \{0: 8\}"),
    (_model(), {0: 4}, r"sliding-window layers \{0: 4\}"),
    (_model(layers=4), {0: 8}, r"has 4 layers x 4 heads but these scores are for 3 x 4"),
    (_model(heads=8, kv=2), {0: 8}, r"has 3 layers x 8 heads"),
])
def test_kv_pattern_refuses_a_model_of_another_layout(model, windows, message, monkeypatch):
    from interp.heads import table

    monkeypatch.setattr(table, "sliding_windows", lambda m: windows)
    scores = head_scores()
    with pytest.raises(BadInputError, match=message):
        scores.kv_pattern("induction", model=model)
    with pytest.raises(BadInputError, match=message):
        scores.keep_full("induction", 0.5, model=model)


def test_kv_pattern_accepts_the_scanned_layout(monkeypatch):
    from interp.heads import table

    monkeypatch.setattr(table, "sliding_windows", lambda m: {0: 8})
    scores = head_scores()
    assert scores.kv_pattern("induction", model=_model()).equals(scores.kv_pattern("induction"))


# -- HTML ----------------------------------------------------------------------------------------
def poison(doc: Any) -> Any:
    """``doc`` with the script payload appended to every string value and to the names of checks'
    recalls and seeds."""
    if isinstance(doc, dict):
        out = {k: poison(v) for k, v in doc.items()}
        for key in ("recall", "random_ablated_loss", "random_heads"):
            if isinstance(out.get(key), dict):
                out[key] = {k + PAYLOAD: v for k, v in out[key].items()}
        return out
    if isinstance(doc, list):
        return [poison(v) for v in doc]
    return doc + PAYLOAD if isinstance(doc, str) else doc


def assert_escaped(page: str) -> None:
    assert "<script>alert" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def test_head_report_escapes_every_string_of_a_crafted_file(heads_folder, tmp_path):
    from interp.heads.table import HeadScores

    def needle_names(doc):  # a needle may be named by its text, too
        for t in doc["checks"]["retrieval_tests"]["per_test"]:
            t["needle"] = "the needle"
        return poison(doc)

    folder = craft(heads_folder, tmp_path / "crafted", "head_scores.json", needle_names)
    scores = HeadScores.load(folder)
    assert scores.model == "tiny" + PAYLOAD and scores.checks["retrieval_tests"]["per_test"][0]["response"].endswith(PAYLOAD)
    page = (scores.save(tmp_path / "resaved") / "report.html").read_text()
    assert_escaped(page)
    for text in ("tiny", "induction", "paprika", "the needle", "none", "alice"):  # each string field, escaped
        assert text + "&lt;script&gt;" in page, text
    assert "<script>alert" not in scores._repr_html_() and "&lt;script&gt;" in scores._repr_html_()


def test_other_report_pages_escape_names(tmp_path):
    from test_results import MAKERS

    from interp.circuits.report import ICLResult

    icl = MAKERS["icl"]()
    icl.model = "tiny" + PAYLOAD
    icl.settings = {"note": PAYLOAD}
    icl.tables["accuracy"]["dataset"] = "sst2" + PAYLOAD
    folder = icl.save(tmp_path / "icl")
    for name in ("report.html", "accuracy.html"):
        assert "<script>alert" not in (folder / name).read_text(), name
    assert_escaped((folder / "report.html").read_text())
    assert ICLResult.load(folder).model == "tiny" + PAYLOAD
    knob = MAKERS["knob"]()
    knob.model = "tiny" + PAYLOAD
    assert_escaped((knob.save(tmp_path / "knob") / "knob.html").read_text())
    neurons = MAKERS["neurons"]()
    neurons.title = PAYLOAD
    neurons.df.loc[0, "token"] = PAYLOAD
    page = (neurons.save(tmp_path / "neurons") / "neurons.html").read_text()
    assert "<script>alert" not in page and "&lt;script&gt;" in page


def test_head_report_escapes_checks_made_in_memory(tmp_path):
    """Checks built in Python (not read from a file, so not validated) are escaped too, every field."""
    from interp.heads.report import render_html

    scores = head_scores(model=PAYLOAD)
    tests = scores.checks["retrieval_tests"]
    for key in ("recalled", "tests", "threshold", "recall_threshold", "share_above_threshold"):
        tests[key] = f"{key}{PAYLOAD}"
    ind = scores.checks["induction_ablation"]
    for key in ("k", "length", "samples", "seed"):
        ind[key] = f"{key}{PAYLOAD}"
    ind["top_heads"] = [{"layer": PAYLOAD, "head": 0}]
    page = render_html(scores)
    assert_escaped(page)
    for key in ("recalled", "tests", "threshold", "recall_threshold", "share_above_threshold", "length", "samples", "seed"):
        assert f"{key}&lt;script&gt;" in page, key
    scores.checks["retrieval_masking"] = {"skipped": PAYLOAD}
    assert_escaped(render_html(scores))
    assert "&lt;script&gt;alert(1)&lt;/script&gt;</p>" in render_html(scores)


def test_a_crafted_value_where_a_number_belongs_never_reaches_the_page(heads_folder, tmp_path):
    """The checks' numbers were written into report.html as they were: now such a file is refused."""
    from interp.heads.table import HeadScores

    for i, key in enumerate(("recalled", "tests", "threshold", "recall_threshold", "share_above_threshold")):
        folder = craft(heads_folder, tmp_path / f"c{i}", "head_scores.json", set_in(f"checks.retrieval_tests.{key}", PAYLOAD))
        with pytest.raises(BadReportError, match=rf"checks\.retrieval_tests\.{key} is '<script>"):
            HeadScores.load(folder)


# -- byte-identical pages ------------------------------------------------------------------------
def test_report_pages_are_byte_identical_between_identical_runs(tmp_path):
    from test_results import MAKERS

    a = head_scores().save(tmp_path / "a")
    b = head_scores().save(tmp_path / "b")
    assert (a / "report.html").read_bytes() == (b / "report.html").read_bytes()
    assert b'id="figure-heatmap-induction-' in (a / "report.html").read_bytes()
    for name, files in (("icl", ("report.html", "accuracy.html", "steps.html", "heads.html")), ("knob", ("knob.html",))):
        first, second = MAKERS[name]().save(tmp_path / f"{name}1"), MAKERS[name]().save(tmp_path / f"{name}2")
        for file in files:
            assert (first / file).read_bytes() == (second / file).read_bytes(), (name, file)


def test_timeline_page_is_byte_identical(tmp_path):
    from interp.heads.timeline import Timeline

    def write(dest: Path) -> bytes:
        reports = [(step, f"checkpoint-{step}", head_scores()) for step in (0, 100)]
        Timeline.from_reports(reports).save(dest)
        return (dest / "timeline.html").read_bytes()

    assert write(tmp_path / "a") == write(tmp_path / "b")


# -- the other result files ---------------------------------------------------------------------
def saved(name: str, tmp_path: Path) -> Path:
    from test_results import MAKERS

    return MAKERS[name]().save(tmp_path / "saved")


def rewrite_table(folder: Path, name: str, change: Callable[[pd.DataFrame], Any]) -> None:
    df = pd.read_parquet(folder / name)
    out = change(df)
    (df if out is None else out).to_parquet(folder / name, index=False)


def load(name: str, folder: Path):
    from interp.results.protocol import result_classes

    cls = {"circuit": "Circuit", "patching": "PatchingResult", "attribution": "AttributionResult",
           "ablation": "AblationResult", "icl": "ICLResult", "knob": "KnobResult", "neurons": "NeuronTable"}[name]
    return next(c for c in result_classes() if c.__name__ == cls).load(folder)


JSON_CASES = [
    ("circuit", "circuit.json", set_in("nodes.0.layer", -1), r"nodes\[0\]\.layer is -1; valid: an integer 0\.\.4096"),
    ("circuit", "circuit.json", set_in("nodes.0.kind", "neuron"), r"nodes\[0\]\.kind is 'neuron' \(a string\); valid: one of head, mlp, logits"),
    ("circuit", "circuit.json", set_in("edges.0.source", "L9H9"), r"edges\[0\]\.source is 'L9H9' \(a string\); valid: the id of one of the nodes"),
    ("circuit", "circuit.json", set_in("nodes.0.head", None), r"nodes\[0\]\.head is null; valid: an integer 0\.\.4095 \(a head node's head\)"),
    ("circuit", "circuit.json", set_in("nodes.1.id", "L0H1"), r"nodes\[1\]\.id is 'L0H1'; valid: an id no other node has"),
    ("circuit", "circuit.json", set_in("nodes.0.id", "L0H2"), r"nodes\[0\]\.id is 'L0H2'; valid: 'L0H1', the label of its layer and head"),
    ("circuit", "circuit.json", set_in("nodes.0.id", "head 1"), r"nodes\[0\]\.id is 'head 1'; valid: 'L0H1', the label of its layer and head"),
    ("circuit", "circuit.json", set_in("edges.1.score", "big"), r"edges\[1\]\.score is 'big'"),
    ("patching", "patching.json", set_in("clean_metric", "x"), r"clean_metric is 'x' \(a string\); valid: a finite number or null"),
    ("patching", "patching.json", set_in("direction", 3), r"direction is 3; valid: a string"),
    ("patching", "patching.json", set_in("tokens", ["a", 5]), r"tokens\[1\] is 5; valid: a string"),
    ("patching", "patching.json", set_in("extra", 1), r"key 'extra' is not one this result has"),
    ("patching", "patching.json", drop("direction"), r"the document lacks 'direction'"),
    ("attribution", "attribution.json", set_in("corrupted_metric", [1]), r"corrupted_metric is a list of 1 items"),
    ("ablation", "ablation.json", set_in("method", None), r"method is null; valid: a string"),
    ("icl", "icl.json", set_in("summarize.0.layer", 2), r"summarize\[0\]\.layer is 2; valid: a layer in 0\.\.1 \(shape\.layers is 2\)"),
    ("icl", "icl.json", set_in("summarize.0.layer", -1), r"summarize\[0\]\.layer is -1; valid: a layer in 0\.\.1"),
    ("icl", "icl.json", set_in("shape.heads", 10**9), r"shape\.heads is 1000000000; valid: an integer 0\.\.4096"),
    ("icl", "icl.json", set_in("accuracy.0.k", "4"), r"accuracy\[0\]\.k is '4' \(a string\)"),
    ("icl", "icl.json", drop("accuracy.0.accuracy"), r"accuracy\[0\] lacks 'accuracy'"),
    ("icl", "icl.json", set_in("accuracy.0.dataset", 7), r"accuracy\[0\]\.dataset is 7; valid: a string"),
    ("knob", "knob.json", set_in("layer", 99), r"layer is 99; valid: a layer in 0\.\.2 \(patching covers 3 layers\)"),
    ("knob", "knob.json", set_in("layers", [-1]), r"layers\[0\] is -1; valid: a layer in 0\.\.2"),
    ("knob", "knob.json", set_in("sweep.0.value", "2"), r"sweep\[0\]\.value is '2' \(a string\); valid: a finite number"),
    ("knob", "knob.json", set_in("sweep.0.value", None), r"sweep\[0\]\.value is null; valid: a finite number"),
    ("knob", "knob.json", drop("items.0.context"), r"items\[0\] lacks 'context'"),
    ("knob", "knob.json", set_in("das_train_items", -2), r"das_train_items is -2; valid: an integer at least 0"),
    ("knob", "knob.json", drop("localisation"), r"the document lacks 'localisation'"),
    ("knob", "knob.json", set_in("settings", {}), r"settings lacks 'site'"),
    ("neurons", "neurons.json", set_in("k_html", 0), r"k_html is 0; valid: an integer 1\.\."),
    ("neurons", "neurons.json", set_in("title", None), r"title is null; valid: a string"),
]


@pytest.mark.parametrize("name, file, change, message", JSON_CASES,
                         ids=[f"{n}-{m[:40]}" for n, _, _, m in JSON_CASES])
def test_crafted_json_of_every_result_is_refused(name, file, change, message, tmp_path):
    folder = craft(saved(name, tmp_path), tmp_path / "crafted", file, change)
    with pytest.raises(BadReportError, match=message) as err:
        load(name, folder)
    assert str(folder / file) in str(err.value)


TABLE_CASES = [
    ("patching", "patching.parquet", lambda df: df.assign(layer=[-1, 0, 0, 1]), r"column 'layer', row 0, is -1; valid: integers in 0\.\.4095"),
    ("patching", "patching.parquet", lambda df: df.assign(position=[np.nan, np.nan, 0.0, 2.0]),
     r"column 'position', row 3, is 2\.0; valid: a position in -1\.\.1 \(patching\.json lists 2 tokens\)"),
    ("patching", "patching.parquet", lambda df: df.assign(head=[0.5, 1.0, np.nan, np.nan]), r"column 'head', row 0, is 0\.5; valid: integers"),
    ("patching", "patching.parquet", lambda df: df.assign(effect=["a", "b", "c", "d"]), r"column 'effect' is of type (large_)?string; valid: numbers or null"),
    ("patching", "patching.parquet", lambda df: df.drop(columns="site"), r"the table is without the columns \['site'\]"),
    ("patching", "patching.parquet", lambda df: df.assign(site=[None, "a", "b", "c"]), r"column 'site', row 0, is null; valid: strings"),
    ("attribution", "attribution.parquet", lambda df: df.assign(neuron=pd.array([None, None, -5], dtype="Int64")),
     r"column 'neuron', row 2, is -5; valid: integers in 0\.\."),
    ("ablation", "ablation.parquet", lambda df: df.assign(head=[0, 1, 0, 99999]), r"column 'head', row 3, is 99999; valid: integers in 0\.\.4095"),
    ("ablation", "ablation.parquet", lambda df: df.assign(layer=[0, 0, 1, np.inf]), r"column 'layer', row 3, is inf"),
    ("neurons", "neurons.parquet", lambda df: df.assign(prob=[0.5, 2.0, 0.75, 0.1]), r"column 'prob', row 1, is 2\.0; valid: numbers in 0\.\.1"),
    ("neurons", "neurons.parquet", lambda df: df.assign(rank=[1, 0, 1, 2]), r"column 'rank', row 1, is 0; valid: integers in 1\.\."),
    ("neurons", "neurons.parquet", lambda df: df.assign(prob=[0.5, np.nan, 0.75, 0.1]), r"column 'prob', row 1, is null"),
]


@pytest.mark.parametrize("name, file, change, message", TABLE_CASES,
                         ids=[f"{n}-{m[:40]}" for n, _, _, m in TABLE_CASES])
def test_crafted_tables_of_every_result_are_refused(name, file, change, message, tmp_path):
    folder = craft(saved(name, tmp_path), tmp_path / "crafted", file)
    rewrite_table(folder, file, change)
    with pytest.raises(BadReportError, match=message) as err:
        load(name, folder)
    assert str(folder / file) in str(err.value)


def test_table_rows_and_sizes_are_bounded_before_reading(tmp_path, monkeypatch):
    from interp.results import reading

    folder = saved("ablation", tmp_path)
    monkeypatch.setattr(reading, "MAX_ROWS", 3)
    with pytest.raises(BadReportError, match=r"the table is 4 rows; valid: at most 3 rows"):
        load("ablation", folder)
    monkeypatch.setattr(reading, "MAX_TABLE_BYTES", 10)
    monkeypatch.setattr(reading, "MAX_ROWS", 100)
    with pytest.raises(BadReportError, match=r"bytes uncompressed; valid: at most 10 bytes"):
        load("ablation", folder)
    (folder / "ablation.parquet").write_bytes(b"PAR1 not a table")
    monkeypatch.undo()
    with pytest.raises(BadReportError, match=r"cannot read .*ablation\.parquet"):
        load("ablation", folder)


def test_icl_patching_table_is_checked(tmp_path):
    from test_results import MAKERS

    icl = MAKERS["icl"]()
    icl.patching = pd.DataFrame({"dataset": ["sst2"] * 2, "site": ["blocks.0.attn.hook_z", "blocks.1.hook_resid_pre"],
                                 "layer": [0, 1], "head": [1, -1], "position": [-1, 3], "token": ["", "x"],
                                 "effect": [0.5, 0.1], "metric": [1.0, 0.2]})
    folder = icl.save(tmp_path / "icl")
    assert len(load("icl", folder).patching) == 2
    for i, (change, message) in enumerate([
        (lambda df: df.assign(head=[-1, -1]), r"column 'head', row 0, is -1; valid: a head in 0\.\.1 at blocks\.\d+\.attn\.hook_z, a site with a head axis"),
        (lambda df: df.assign(layer=[0, 2]), r"column 'layer', row 1, is 2; valid: integers in 0\.\.1"),
        (lambda df: df.assign(position=[-2, 3]), r"column 'position', row 0, is -2"),
    ]):
        crafted = craft(folder, tmp_path / f"c{i}", "patching.parquet")
        rewrite_table(crafted, "patching.parquet", change)
        with pytest.raises(BadReportError, match=message):
            load("icl", crafted)


def test_crafted_directions_are_refused(tmp_path):
    import torch
    from safetensors.torch import save_file

    folder = saved("knob", tmp_path)
    for i, (tensors, message) in enumerate([
        ({"direction": torch.tensor([float("nan"), 1.0])}, r"tensor 'direction' is a vector with NaN or infinite entries"),
        ({"direction": torch.zeros(8)}, r"tensor 'direction' is a vector of zeros"),
        ({"direction": torch.ones(3, 8)}, r"tensor 'direction' is of shape \[3, 8\]; valid: a vector of at most"),
        ({"direction": torch.ones(8, dtype=torch.int64)}, r"tensor 'direction' is of dtype torch.int64"),
    ]):
        crafted = craft(folder, tmp_path / f"c{i}", "direction.safetensors")
        save_file(tensors, str(crafted / "direction.safetensors"))
        with pytest.raises(BadReportError, match=message):
            load("knob", crafted)
    crafted = craft(folder, tmp_path / "damaged", "direction.safetensors", text="not a safetensors file")
    with pytest.raises(BadReportError, match=r"cannot read .*direction\.safetensors"):
        load("knob", crafted)
    # A header that claims a huge tensor in a small file.
    header = json.dumps({"direction": {"dtype": "F32", "shape": [1 << 40], "data_offsets": [0, 4 << 40]}}).encode()
    (crafted / "direction.safetensors").write_bytes(len(header).to_bytes(8, "little") + header + b"\0" * 16)
    with pytest.raises(BadReportError, match=r"cannot read|of shape \[1099511627776\]"):
        load("knob", crafted)


def test_crafted_timeline_is_refused(tmp_path):
    from interp.heads.timeline import Timeline, TimelineError

    Timeline.from_reports([(step, f"checkpoint-{step}", head_scores()) for step in (0, 100)]).save(tmp_path / "t")
    for i, (change, message) in enumerate([
        (set_in("checkpoints.0.folder", "../../elsewhere"), r"checkpoints\[0\]\.folder is '\.\./\.\./elsewhere' \(a string\); valid: a plain name"),
        (set_in("checkpoints.1.step", 0), r"checkpoints\[1\]\.step is 0; valid: a step no other checkpoint has"),
        (set_in("checkpoints.0.step", -5), r"checkpoints\[0\]\.step is -5"),
        (set_in("figure_scores", ["nope"]), r"figure_scores\[0\] is 'nope' \(a string\); valid: one of the table's scores"),
        (drop("checkpoints"), r"the document lacks 'checkpoints'"),
    ]):
        crafted = craft(tmp_path / "t", tmp_path / f"c{i}", "timeline.json", change)
        with pytest.raises(TimelineError, match=r"cannot read the timeline in .*" + message):
            Timeline.load(crafted)
    crafted = craft(tmp_path / "t", tmp_path / "table", "timeline.json")
    rewrite_table(crafted, "timeline.parquet", lambda df: df.assign(layer=-1))
    with pytest.raises(TimelineError, match=r"column 'layer', row 0, is -1"):
        Timeline.load(crafted)


def test_crafted_activation_manifest_is_refused(tmp_path):
    from interp.probes.collect import MANIFEST, Activations

    folder = tmp_path / "acts"
    folder.mkdir()
    for doc, message in [
        ({"sites": ["blocks.0.hook_resid_post"], "labels": False, "shards": [{"file": "../../x.safetensors", "examples": 1}]},
         r"shards\[0\]\.file is '\.\./\.\./x\.safetensors' \(a string\); valid: a plain name"),
        ({"sites": [], "labels": False, "shards": []}, r"sites is an empty list"),
        ({"sites": ["a"], "labels": "yes", "shards": []}, r"labels is 'yes' \(a string\); valid: true or false"),
        ({"sites": ["a"], "labels": False, "shards": [{"file": "s.safetensors", "examples": -1}]}, r"shards\[0\]\.examples is -1"),
    ]:
        (folder / MANIFEST).write_text(json.dumps(doc))
        with pytest.raises(BadReportError, match=message):
            Activations.load(folder)


def test_crafted_sweep_table_is_refused(tmp_path):
    from interp.results.reading import sweep_table

    path = tmp_path / "heads.parquet"
    pd.DataFrame({"model": ["a"], "score": ["s"], "layer": [4000], "head": [4000], "value": [1.0]}).to_parquet(path)
    with pytest.raises(BadReportError, match=r"model 'a' is 4001 layers × 4001 heads"):
        sweep_table(path)
    pd.DataFrame({"model": ["a"], "score": ["s"], "layer": [-1], "head": [0], "value": [1.0]}).to_parquet(path)
    with pytest.raises(BadReportError, match=r"column 'layer', row 0, is -1"):
        sweep_table(path)
