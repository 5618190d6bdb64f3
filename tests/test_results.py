"""Every analysis result follows one protocol (interp.results.protocol.Result): save(folder) returns the
folder, load(folder), to_dict() (plain data, the one name: no to_json), figures(); a round trip
keeps to_dict() through strict JSON, and every JSON file a save writes is strict."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from interp.results.protocol import Result
from interp.results.strict_json import dumps, finite


def _circuit() -> Any:
    from interp.circuits.graph import Circuit

    nodes = [
        {"id": "L0H1", "kind": "head", "layer": 0, "head": 1, "effect": float("nan")},
        {"id": "MLP0", "kind": "mlp", "layer": 0, "head": None, "effect": 0.25},
        {"id": "logits", "kind": "logits", "layer": 1, "head": None, "effect": None},
    ]
    edges = [{"source": "L0H1", "target": "logits", "score": float("inf")},
             {"source": "MLP0", "target": "logits", "score": -0.5}]
    return Circuit("tiny", nodes, edges, settings={"node_threshold": 0.1})


def _patching() -> Any:
    import pandas as pd

    from interp.circuits.patching import PatchingResult

    nan = float("nan")
    df = pd.DataFrame({
        "site": ["blocks.0.attn.hook_z", "blocks.0.attn.hook_z", "blocks.0.hook_resid_pre", "blocks.1.hook_resid_pre"],
        "layer": [0, 0, 0, 1],
        "head": [0.0, 1.0, nan, nan],
        "position": [nan, nan, 0.0, 1.0],
        "effect": [0.5, nan, -0.25, float("inf")],
        "metric": [1.0, 2.0, nan, 0.0],
    })
    return PatchingResult(df, 2.5, nan, "denoise", ["a", "b"])


def _knob() -> Any:
    import numpy as np
    import torch

    from interp.probes.knob import KnobResult, Localisation
    from interp.probes.knob_task import knob_items

    nan, inf = float("nan"), float("inf")
    loc = Localisation("CP", [1], 0.9, [0.1, nan, 0.2], 1.0, [{"layers": [1], "recovery": nan}])
    sweep = [{"method": m, "k": k, "value": k, "context_share_prior": 0.5, "context_share_context": 0.25,
              "ld_prior": -inf if k < 0 else 0.0, "ld_context": nan} for m in ("das", "random") for k in (-2.0, 2.0)]
    g = torch.Generator().manual_seed(0)
    u = [torch.nn.functional.normalize(torch.randn(8, generator=g), dim=0) for _ in range(3)]
    return KnobResult("tiny", {"site": "blocks.1.hook_resid_post", "threshold": np.float64(0.8)},
                      {"prior": 1.0, "context": float(np.float32(0.5))}, {"CP": loc, "PC": loc}, [1], 1,
                      {"das": u[0], "diff_means": u[1], "random0": u[2]}, {"das": nan, "diff_means": 0.5},
                      [nan, 0.0], {"das": nan, "diff_means": 0.3}, sweep, 2, knob_items(3))


def _icl() -> Any:
    import pandas as pd

    from interp.circuits.report import ICLResult

    nan = float("nan")
    tables = {
        "accuracy": pd.DataFrame({"dataset": ["sst2", "sst2"], "k": [0, 4], "accuracy": [0.5, nan], "n": [8, 8]}),
        "summarize": pd.DataFrame({"dataset": ["sst2", "sst2"], "layer": [0, 1], "alignment": [0.1, float("inf")]}),
    }
    return ICLResult("tiny", tables, settings={"k": 4}, n_layers=2, n_heads=2, versions={"interp": "0"})


def _heads() -> Any:
    import numpy as np

    from interp.heads.table import HeadScores

    arrays = {"induction": np.array([[0.5, np.nan], [np.inf, -0.25]]), "prev_token": np.zeros((2, 2))}
    return HeadScores.from_arrays(arrays, model="tiny", settings={"n": 4}, checks={"induction": {"ok": True}},
                                  versions={"interp": "0"})


def _neurons() -> Any:
    import pandas as pd

    from interp.neurons.report import NeuronTable

    df = pd.DataFrame({"layer": [0, 0, 1, 1], "neuron": [3, 3, 7, 7], "rank": [1, 2, 1, 2],
                       "token_id": [5, 6, 5, 9], "token": [" dog", " cat", " dog", "<b>"],
                       "prob": [0.5, 0.25, 0.75, 0.1]})
    df.attrs = {"weights": "out", "apply_final_norm": True, "threshold": float("nan")}
    return NeuronTable(df, "tiny neurons", k_html=2)


def _attribution() -> Any:
    import pandas as pd

    from interp.circuits.attribution import AttributionResult

    nan = float("nan")
    df = pd.DataFrame({"site": ["blocks.0.attn.hook_z", "blocks.0.attn.hook_z", "blocks.0.mlp.hook_post"],
                       "layer": [0, 0, 0], "head": pd.array([0, 1, None], dtype="Int64"),
                       "neuron": pd.array([None, None, 5], dtype="Int64"), "position": pd.array([None] * 3, dtype="Int64"),
                       "effect": [0.5, nan, -0.25]})
    return AttributionResult(df, clean_metric=1.5, corrupted_metric=float("-inf"))


def _ablation() -> Any:
    import pandas as pd

    from interp.circuits.ablation import AblationResult

    df = pd.DataFrame({"layer": [0, 0, 1, 1], "head": [0, 1, 0, 1], "method": ["zero"] * 4,
                       "metric": [1.0, 2.0, float("nan"), 0.5], "effect": [0.0, 1.0, float("nan"), -0.5]})
    return AblationResult(df, method="zero", base_metric=1.0)


def _timeline() -> Any:
    from interp.heads.timeline import Timeline

    def scores(step: int) -> Any:
        import numpy as np

        from interp.heads.table import HeadScores

        arrays = {"induction": np.array([[0.1 * step, np.nan], [np.inf, -0.25]]), "prev_token": np.full((2, 2), step)}
        return HeadScores.from_arrays(arrays, model="tiny", versions={"interp": "0"})

    return Timeline.from_reports([(step, f"checkpoint-{step}", scores(step)) for step in (20, 0, 10)],
                                 figure_scores=["induction"], settings={"scores": ["induction", "prev_token"]})


MAKERS: dict[str, Callable[[], Any]] = {
    "attribution": _attribution,
    "ablation": _ablation,
    "neurons": _neurons,
    "heads": _heads,
    "icl": _icl,
    "knob": _knob,
    "circuit": _circuit,
    "patching": _patching,
    "timeline": _timeline,
}


def _strict(text: str) -> Any:
    def reject(constant: str) -> Any:
        raise ValueError(f"not strict JSON: {constant}")

    return json.loads(text, parse_constant=reject)


@pytest.mark.parametrize("name", sorted(MAKERS))
def test_result_protocol_round_trip(name: str, tmp_path: Path) -> None:
    result = MAKERS[name]()
    assert isinstance(result, Result)
    folder = result.save(tmp_path / name)
    assert Path(folder) == tmp_path / name
    jsons = [p for p in Path(folder).iterdir() if p.suffix == ".json"]
    assert any(not p.name.startswith(".") for p in jsons)
    for p in jsons:
        _strict(p.read_text())
    doc = result.to_dict()
    _plain(doc, "to_dict()")
    assert _same(_strict(dumps(doc)), finite(doc))  # through the strict writer: NaN -> null, nothing lost
    loaded = type(result).load(folder)
    assert _same(finite(loaded.to_dict()), finite(doc))
    _strict(dumps(loaded.to_dict()))
    for key, tensor in getattr(result, "directions", {}).items():  # what to_dict leaves to other files
        assert (loaded.directions[key] == tensor.float()).all()
    figs = result.figures()
    assert isinstance(figs, dict) and figs
    import plotly.graph_objects as go

    assert all(isinstance(k, str) and isinstance(f, go.Figure) for k, f in figs.items())
    # a second save into the same folder replaces our files and refuses foreign ones
    result.save(folder)
    (Path(folder) / "mine.txt").write_text("user file")
    from interp.results.folders import OutputError

    with pytest.raises(OutputError):
        result.save(folder)
    assert (Path(folder) / "mine.txt").read_text() == "user file"


def _plain(value: Any, where: str) -> None:
    """``value`` is plain JSON-ready data: dicts with string keys, lists, str, int, float, bool, None
    (no numpy scalars, arrays, tuples, DataFrames)."""
    if isinstance(value, dict):
        for k, v in value.items():
            assert type(k) is str, f"{where}: key {k!r} is a {type(k).__name__}"
            _plain(v, f"{where}[{k!r}]")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _plain(v, f"{where}[{i}]")
    else:
        assert value is None or type(value) in (str, int, float, bool), f"{where} is a {type(value).__name__}"


@pytest.mark.parametrize("name", sorted(MAKERS))
def test_save_into_an_open_folder_returns_that_folder(name: str, tmp_path: Path) -> None:
    from interp.results.folders import output_folder

    with output_folder(tmp_path / "open", kind="bundle") as out:
        assert MAKERS[name]().save(out) == out.path == tmp_path / "open"
    assert type(MAKERS[name]()).load(tmp_path / "open") is not None


def test_one_name_for_the_document() -> None:
    from interp.results.protocol import result_classes

    for cls in result_classes():
        assert not hasattr(cls, "to_json"), f"{cls.__name__}.to_json: the protocol's one name is to_dict"


def _same(a: Any, b: Any) -> bool:
    """Equal, floats up to rounding (parquet and JSON keep float64, but be tolerant)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) and isinstance(b, (int, float)) and not isinstance(b, bool):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
    return bool(a == b)


def test_every_result_class_is_covered() -> None:
    from interp.results.protocol import result_classes

    covered = {type(make()) for make in MAKERS.values()}
    for cls in result_classes():
        assert cls in covered, f"{cls.__name__} has no round-trip case in tests/test_results.py"
        for method in ("save", "load", "to_dict", "figures"):
            assert callable(getattr(cls, method, None)), f"{cls.__name__}.{method}"
