"""One validating reader for the files interp reads back: every result class's JSON and parquet
(``interp.results.protocol.RESULTS``), a timeline, a sweep's ``heads.parquet``, a knob's
``direction.safetensors`` and an activation manifest. The class ``load`` methods and the app's
report readers all read through here.

A file is checked before anything is built from it: its size (bytes, rows, declared shapes) is
bounded before it is read or allocated, JSON is strict (no NaN, no number that overflows to
infinity), every field has its type, every layer and head index lies within the shape the file
records (``shape.layers``, ``shape.heads``, ``kv_heads``, sliding-window layers), counts are
non-negative, names of files it points to are plain names. A file that breaks a rule raises
:class:`interp.errors.BadReportError` naming the file, the field and what would be valid:

>>> import json, tempfile
>>> from pathlib import Path
>>> folder = Path(tempfile.mkdtemp())
>>> doc = {"model": "m", "shape": {"layers": 2, "heads": 2},
...        "scores": [{"score": "induction", "layer": -1, "head": 0, "value": 0.5}]}
>>> _ = (folder / "head_scores.json").write_text(json.dumps(doc))
>>> head_scores(folder)                                  # doctest: +IGNORE_EXCEPTION_DETAIL
Traceback (most recent call last):
BadReportError: .../head_scores.json: scores[0].layer is -1; valid: a layer in 0..1 (shape.layers is 2)
"""

from __future__ import annotations

import json
import math
import numbers
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from interp.core.sites import head_axis, head_label, parse_head_label
from interp.errors import BadInputError, BadReportError

if TYPE_CHECKING:
    import pandas as pd
    import torch

# Bounds on what a file may make interp allocate: far above any real model or report.
MAX_JSON_BYTES = 512 << 20  # a JSON file's size
MAX_TABLE_BYTES = 4 << 30  # a parquet table's uncompressed size (from its footer)
MAX_ROWS = 100_000_000  # rows of a parquet table
MAX_COLUMNS = 256  # columns of a parquet table
MAX_ITEMS = 10_000_000  # entries of one JSON list or object
MAX_LAYERS = 4096
MAX_HEADS = 4096
MAX_GRID = 1 << 20  # layers × heads: the size of one score's matrix
MAX_NEURONS = 1 << 24  # neurons of one layer
MAX_POSITION = 1 << 24  # token positions
MAX_RANK = 1 << 20  # decoded tokens per neuron
MAX_VECTOR = 1 << 22  # entries of one direction
MAX_SAFETENSORS_BYTES = 1 << 30  # a direction file's size


def _show(value: Any) -> str:
    """``value`` as a message shows it: short, its type for containers."""
    if hasattr(value, "item") and callable(value.item) and getattr(value, "shape", None) == ():
        value = value.item()  # a numpy scalar from a table as the Python value it is
    if isinstance(value, dict):
        return f"an object with {len(value)} keys"
    if isinstance(value, list):
        return f"a list of {len(value)} items"
    if isinstance(value, bool):
        return f"{value!r} (a boolean)"
    if isinstance(value, str):
        text = repr(value if len(value) <= 60 else value[:57] + "...")
        return f"{text} (a string)"
    if value is None:
        return "null"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _span(low: int | None, high: int | None) -> str:
    if low is not None and high is not None:
        return f"{low}..{high}"
    return f"at least {low}" if low is not None else f"at most {high}"


class Fields:
    """Checks on the fields of one file; every failure names the file and the field."""

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)

    def fail(self, field: str, got: str, valid: str) -> NoReturn:
        raise BadReportError(f"{self.path}: {field} is {got}; valid: {valid}")

    def lacks(self, where: str, missing: Sequence[str], keys: Sequence[str]) -> NoReturn:
        raise BadReportError(f"{self.path}: {where or 'the document'} lacks {', '.join(map(repr, missing))}; "
                             f"valid: an object with the keys {', '.join(keys)}")

    def get(self, d: Mapping[str, Any], key: str, where: str = "") -> Any:
        if key not in d:
            self.lacks(where, [key], [key])
        return d[key]

    def obj(self, value: Any, field: str, *, null: bool = False) -> dict[str, Any]:
        """A JSON object (``null``: None reads as an empty one)."""
        if value is None and null:
            return {}
        if not isinstance(value, dict):
            self.fail(field, _show(value), "an object" + (" or null" if null else ""))
        return value

    def row(self, value: Any, field: str, keys: Sequence[str]) -> dict[str, Any]:
        """An object with (at least) ``keys``."""
        value = self.obj(value, field)
        missing = [k for k in keys if k not in value]
        if missing:
            self.lacks(field, missing, keys)
        return value

    def items(self, value: Any, field: str, *, limit: int = MAX_ITEMS) -> list[Any]:
        if not isinstance(value, list):
            self.fail(field, _show(value), "a list")
        if len(value) > limit:
            self.fail(field, f"a list of {len(value)} items", f"at most {limit} items")
        return value

    def integer(self, value: Any, field: str, low: int | None = 0, high: int | None = None, why: str = "",
                *, null: bool = False) -> int | None:
        if value is None and null:
            return None
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            if isinstance(value, float) and value.is_integer():
                value = int(value)  # 3.0 where a writer kept an integer as a float
            else:
                self.fail(field, _show(value), f"an integer {_span(low, high)}{why}" + (" or null" if null else ""))
        if (low is not None and value < low) or (high is not None and value > high):
            self.fail(field, _show(value), f"an integer {_span(low, high)}{why}")
        return int(value)

    def whole(self, value: Any, field: str, low: int | None = 0, high: int | None = None, why: str = "") -> int:
        out = self.integer(value, field, low, high, why)
        assert out is not None
        return out

    def index(self, value: Any, field: str, size: int, kind: str, why: str) -> int:
        """An index in ``0..size-1`` (``kind``: layer, head; ``why``: where ``size`` comes from)."""
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not 0 <= int(value) < size:
            self.fail(field, _show(value), f"a {kind} in 0..{size - 1} ({why})")
        return int(value)

    def number(self, value: Any, field: str, *, null: bool = False, low: float | None = None,
               high: float | None = None) -> float | None:
        """A finite number (an int or a float; not a boolean), ``null``: or None."""
        if value is None and null:
            return None
        valid = "a finite number" + (f" in {low}..{high}" if low is not None and high is not None else "") + (
            " or null" if null else "")
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(float(value)):
            self.fail(field, _show(value), valid)
        out = float(value)
        if (low is not None and out < low) or (high is not None and out > high):
            self.fail(field, _show(value), valid)
        return out

    def scalar(self, value: Any, field: str) -> Any:
        """A measured value: a finite number, a boolean or null."""
        if value is None or isinstance(value, bool):
            return value
        self.number(value, field, null=True)
        return value

    def text(self, value: Any, field: str, *, null: bool = False, empty: bool = True) -> str | None:
        if value is None and null:
            return None
        if not isinstance(value, str) or (not empty and not value):
            self.fail(field, _show(value), ("a non-empty string" if not empty else "a string") + (" or null" if null else ""))
        return value

    def string(self, value: Any, field: str, *, empty: bool = True) -> str:
        out = self.text(value, field, empty=empty)
        assert out is not None
        return out

    def flag(self, value: Any, field: str) -> bool:
        if not isinstance(value, bool):
            self.fail(field, _show(value), "true or false")
        return value

    def name(self, value: Any, field: str) -> str:
        """A plain file or folder name (no path separator, not ``.`` or ``..``)."""
        text = self.string(value, field, empty=False)
        if "/" in text or "\\" in text or text in (".", "..") or "\0" in text:
            self.fail(field, _show(value), "a plain name of a file or folder next to this file (no / or ..)")
        return text

    def heads(self, value: Any, field: str, layers: int, heads: int) -> list[dict[str, Any]]:
        """``[{"layer": l, "head": h}, ...]`` within ``layers`` × ``heads``."""
        out = self.items(value, field)
        for i, h in enumerate(out):
            h = self.obj(h, f"{field}[{i}]")
            self.index(self.get(h, "layer", f"{field}[{i}]"), f"{field}[{i}].layer", layers, "layer",
                       f"the report has {layers} layers")
            self.index(self.get(h, "head", f"{field}[{i}]"), f"{field}[{i}].head", heads, "head",
                       f"the report has {heads} heads per layer")
        return out

    def grid(self, layers: int, heads: int, field: str) -> None:
        if layers * heads > MAX_GRID:
            self.fail(field, f"{layers} layers × {heads} heads", f"at most {MAX_GRID} heads in all")


# -- JSON ------------------------------------------------------------------------------------------
def read_json(path: str | os.PathLike[str], *, max_bytes: int | None = None) -> Any:
    """The strict JSON in ``path``: refused (``BadReportError``) if missing, larger than
    ``max_bytes``, not UTF-8, not JSON, or holding NaN, Infinity or a number that overflows to
    infinity (a writer writes those as null, so such a file was not written by interp)."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise BadReportError(f"no {path.name} in {path.parent}") from None
    except OSError as exc:
        raise BadReportError(f"cannot read {path}: {exc}") from None
    if not path.is_file():
        raise BadReportError(f"{path} is not a file")
    max_bytes = MAX_JSON_BYTES if max_bytes is None else max_bytes
    if size > max_bytes:
        raise BadReportError(f"{path} is {size} bytes; valid: a report file of at most {max_bytes} bytes")

    def constant(name: str) -> Any:
        raise ValueError(f"it holds {name}, which strict JSON has not (interp writes null)")

    def real(text: str) -> float:
        value = float(text)
        if not math.isfinite(value):
            raise ValueError(f"it holds the number {text[:30]}, too large for a float (interp writes null)")
        return value

    try:
        return json.loads(path.read_text(encoding="utf-8"), parse_constant=constant, parse_float=real)
    except OSError as exc:
        raise BadReportError(f"cannot read {path}: {exc}") from None
    except UnicodeDecodeError as exc:
        raise BadReportError(f"{path} is not UTF-8 text: {exc}") from None
    except RecursionError:
        raise BadReportError(f"{path} nests its JSON too deeply") from None
    except ValueError as exc:  # json.JSONDecodeError is a ValueError
        raise BadReportError(f"cannot read {path}: not strict JSON ({exc})") from None


def _document(path: Path) -> tuple[Fields, dict[str, Any]]:
    f = Fields(path)
    return f, f.obj(read_json(path), "the document")


# -- parquet ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Column:
    """What a parquet column may hold. ``kind``: ``int`` (whole numbers; stored as floats where a
    column has nulls), ``float``, ``str`` or ``bool``; ``null``: missing values allowed;
    ``low``/``high``: the range of its values; ``finite``: no infinities (NaN only when ``null``)."""

    kind: str
    null: bool = False
    low: float | None = None
    high: float | None = None
    finite: bool = False

    def describe(self) -> str:
        what = {"int": "integers", "float": "numbers", "str": "strings", "bool": "booleans"}[self.kind]
        if self.low is not None or self.high is not None:
            lo = "" if self.low is None else f"{self.low:g}"
            hi = "" if self.high is None else f"{self.high:g}"
            what += f" in {lo}..{hi}"
        return what + (" or null" if self.null else "")


def _arrow_kind_ok(kind: str, arrow_type: Any) -> bool:
    import pyarrow as pa

    t = arrow_type.value_type if pa.types.is_dictionary(arrow_type) else arrow_type
    if pa.types.is_null(t):
        return True  # a column of nulls only: the null check decides
    if kind in ("int", "float"):
        return bool(pa.types.is_integer(t) or pa.types.is_floating(t))
    if kind == "str":
        return bool(pa.types.is_string(t) or pa.types.is_large_string(t))
    if kind == "bool":
        return bool(pa.types.is_boolean(t))
    return True


def read_table(path: str | os.PathLike[str], columns: Mapping[str, Column],
               optional: Mapping[str, Column] | None = None, *, max_rows: int | None = None) -> pd.DataFrame:
    """The parquet table in ``path`` (never pickle), after its footer is checked (rows,
    uncompressed size, the columns ``columns`` requires and their types) and then its values."""
    import numpy as np
    import pandas as pd
    import pyarrow.parquet as pq

    path = Path(path)
    f = Fields(path)
    if not path.exists():
        raise BadReportError(f"no {path.name} in {path.parent}")
    try:
        meta = pq.read_metadata(path)
        schema = meta.schema.to_arrow_schema()
    except Exception as exc:  # pyarrow raises its own types for damaged files
        raise BadReportError(f"cannot read {path}: {exc}") from None
    max_rows = MAX_ROWS if max_rows is None else max_rows
    if meta.num_rows > max_rows:
        f.fail("the table", f"{meta.num_rows} rows", f"at most {max_rows} rows")
    size = sum(meta.row_group(i).total_byte_size for i in range(meta.num_row_groups))
    if size > MAX_TABLE_BYTES:
        f.fail("the table", f"{size} bytes uncompressed", f"at most {MAX_TABLE_BYTES} bytes")
    if len(schema.names) > MAX_COLUMNS:
        f.fail("the table", f"{len(schema.names)} columns", f"at most {MAX_COLUMNS} columns")
    missing = [c for c in columns if c not in schema.names]
    if missing:
        f.fail("the table", f"without the columns {missing}", f"a table with the columns {', '.join(columns)}")
    rules = {**(optional or {}), **columns}
    for name, rule in rules.items():
        if name in schema.names and not _arrow_kind_ok(rule.kind, schema.field(name).type):
            f.fail(f"column {name!r}", f"of type {schema.field(name).type}", rule.describe())
    try:
        df = pd.read_parquet(path)
    except Exception as exc:  # pyarrow raises its own types for damaged files
        raise BadReportError(f"cannot read {path}: {exc}") from None
    for name, rule in rules.items():
        if name not in df.columns:
            continue
        col = df[name]
        missing_at = np.flatnonzero(col.isna().to_numpy())
        if len(missing_at) and not rule.null:
            f.fail(f"column {name!r}, row {missing_at[0]},", "null", rule.describe())
        if rule.kind in ("int", "float"):
            values = col.to_numpy(dtype=float, na_value=np.nan)
            present = ~np.isnan(values)
            bad = np.zeros(len(values), dtype=bool)
            if rule.kind == "int" or rule.finite:
                bad |= present & ~np.isfinite(values)
            if rule.kind == "int":
                bad |= present & np.isfinite(values) & (values != np.floor(values))
            if rule.low is not None:
                bad |= present & (values < rule.low)
            if rule.high is not None:
                bad |= present & (values > rule.high)
            if bad.any():
                i = int(np.flatnonzero(bad)[0])
                f.fail(f"column {name!r}, row {i},", _show(col.iloc[i]), rule.describe())
    return df


def _ints(df: pd.DataFrame, names: Iterable[str]) -> pd.DataFrame:
    """``df`` with whole-number float columns without nulls as int64 (as they were written)."""
    for name in names:
        if name in df.columns and df[name].dtype.kind == "f" and not df[name].isna().any():
            df[name] = df[name].astype("int64")
    return df


# -- head scores (HeadScores) ----------------------------------------------------------------------
HEAD_SCORES = "head_scores.json"


def head_scores(folder: str | os.PathLike[str]) -> dict[str, Any]:
    """``head_scores.json`` checked: the keyword arguments of ``HeadScores`` plus its rows
    (``rows``: score, layer, head, value)."""
    f, d = _document(Path(folder) / HEAD_SCORES)
    model = f.string(f.get(d, "model"), "model")
    settings = f.obj(d.get("settings"), "settings", null=True)
    versions = f.obj(d.get("versions"), "versions", null=True)
    raw = f.items(f.get(d, "scores"), "scores")
    shape = f.obj(d.get("shape"), "shape", null=True)
    rows: list[tuple[str, int, int, float | None]] = []
    for i, r in enumerate(raw):
        where = f"scores[{i}]"
        r = f.row(r, where, ("score", "layer", "head", "value"))
        rows.append((f.string(r["score"], f"{where}.score", empty=False),
                     f.whole(r["layer"], f"{where}.layer", None),  # ranges below, against the shape
                     f.whole(r["head"], f"{where}.head", None),
                     f.number(r["value"], f"{where}.value", null=True)))
    if shape:
        layers = f.whole(f.get(shape, "layers", "shape"), "shape.layers", 1, MAX_LAYERS)
        heads = f.whole(f.get(shape, "heads", "shape"), "shape.heads", 1, MAX_HEADS)
        why_l, why_h = f"shape.layers is {layers}", f"shape.heads is {heads}"
    elif rows:  # a report written before the shape was recorded
        for i, (_, layer, head, _) in enumerate(rows):
            f.whole(layer, f"scores[{i}].layer", 0, None, " (no shape is recorded)")
            f.whole(head, f"scores[{i}].head", 0, None, " (no shape is recorded)")
        layers, heads = max(r[1] for r in rows) + 1, max(r[2] for r in rows) + 1
        why_l = why_h = "no shape is recorded"
    else:
        f.fail("shape", "missing and scores is empty", "a shape {layers, heads} or at least one score")
    f.grid(layers, heads, "shape")
    seen: set[tuple[str, int, int]] = set()
    for i, (score, layer, head, _) in enumerate(rows):
        if not 0 <= layer < layers:
            f.fail(f"scores[{i}].layer", str(layer), f"a layer in 0..{layers - 1} ({why_l})")
        if not 0 <= head < heads:
            f.fail(f"scores[{i}].head", str(head), f"a head in 0..{heads - 1} ({why_h})")
        if (score, layer, head) in seen:
            f.fail(f"scores[{i}]", f"a second {score!r} value of layer {layer} head {head}", "one value per score and head")
        seen.add((score, layer, head))
    kv_heads = f.integer(shape.get("kv_heads"), "shape.kv_heads", 1, heads, null=True)
    if kv_heads is not None and heads % kv_heads:
        divisors = ", ".join(str(k) for k in range(1, heads + 1) if heads % k == 0)
        f.fail("shape.kv_heads", str(kv_heads), f"a divisor of shape.heads ({heads}): {divisors}")
    windows = None
    if shape.get("sliding_windows") is not None:
        raw_windows = f.obj(shape["sliding_windows"], "shape.sliding_windows")
        windows = {}
        for key, value in raw_windows.items():
            field = f"shape.sliding_windows[{key!r}]"
            if not (isinstance(key, str) and key.isdigit() and int(key) < layers):
                f.fail("a key of shape.sliding_windows", repr(key), f"a layer in 0..{layers - 1} written as a string")
            windows[int(key)] = f.whole(value, field, 1, None, " (tokens in the layer's window)")
    checks = f.obj(d.get("checks"), "checks", null=True)
    _head_checks(f, checks, layers, heads)
    return {"rows": rows, "model": model, "n_layers": layers, "n_heads": heads, "settings": settings,
            "checks": checks, "versions": versions, "kv_heads": kv_heads, "sliding_windows": windows}


def _head_checks(f: Fields, checks: dict[str, Any], layers: int, heads: int) -> None:
    """The causal checks a head-score report renders (the keys its ``report.html`` reads)."""
    ind = checks.get("induction_ablation")
    if ind is not None:
        w = "checks.induction_ablation"
        ind = f.obj(ind, w)
        for key in ("k", "length", "samples", "seed"):
            f.whole(f.get(ind, key, w), f"{w}.{key}", 0)
        for key in ("clean_loss", "top_ablated_loss"):
            f.number(f.get(ind, key, w), f"{w}.{key}", null=True)
        for key in ("loss_increase_top", "loss_increase_random_mean"):
            f.number(ind.get(key), f"{w}.{key}", null=True)
        f.heads(f.get(ind, "top_heads", w), f"{w}.top_heads", layers, heads)
        for seed, v in f.obj(f.get(ind, "random_ablated_loss", w), f"{w}.random_ablated_loss").items():
            f.number(v, f"{w}.random_ablated_loss[{seed!r}]", null=True)
        for seed, hs in f.obj(ind.get("random_heads"), f"{w}.random_heads", null=True).items():
            f.heads(hs, f"{w}.random_heads[{seed!r}]", layers, heads)
    ret = checks.get("retrieval_masking")
    if ret is not None:
        w = "checks.retrieval_masking"
        ret = f.obj(ret, w)
        if "recall" in ret:
            for name, v in f.obj(ret["recall"], f"{w}.recall").items():
                f.number(v, f"{w}.recall[{name!r}]", null=True)
            f.whole(f.get(ret, "k", w), f"{w}.k", 0)
            f.heads(f.get(ret, "top_heads", w), f"{w}.top_heads", layers, heads)
            for seed, hs in f.obj(ret.get("random_heads"), f"{w}.random_heads", null=True).items():
                f.heads(hs, f"{w}.random_heads[{seed!r}]", layers, heads)
        else:
            f.string(f.get(ret, "skipped", w), f"{w}.skipped")
    tests = checks.get("retrieval_tests")
    if tests is not None:
        w = "checks.retrieval_tests"
        tests = f.obj(tests, w)
        n = f.whole(f.get(tests, "tests", w), f"{w}.tests", 0)
        f.whole(f.get(tests, "recalled", w), f"{w}.recalled", 0, n, f" (of {w}.tests)")
        for key in ("threshold", "recall_threshold"):
            f.number(tests.get(key), f"{w}.{key}", null=True)
        f.number(f.get(tests, "share_above_threshold", w), f"{w}.share_above_threshold", null=True, low=0, high=1)
        for i, t in enumerate(f.items(f.get(tests, "per_test", w), f"{w}.per_test")):
            wt = f"{w}.per_test[{i}]"
            t = f.obj(t, wt)
            needle = f.get(t, "needle", wt)
            if not isinstance(needle, str):
                f.whole(needle, f"{wt}.needle", 0)
            f.whole(f.get(t, "length", wt), f"{wt}.length", 0)
            f.number(f.get(t, "depth", wt), f"{wt}.depth", low=0, high=1)
            f.number(f.get(t, "recall", wt), f"{wt}.recall", null=True)
            f.string(f.get(t, "response", wt), f"{wt}.response")
            if "recalled" in t:
                f.flag(t["recalled"], f"{wt}.recalled")


# -- a circuit (Circuit) -------------------------------------------------------------------------
CIRCUIT = "circuit.json"
NODE_KINDS = ("head", "mlp", "logits")


def _head_at(label: str) -> tuple[int, int] | None:
    try:
        return parse_head_label(label)
    except BadInputError:
        return None


def circuit(folder: str | os.PathLike[str]) -> dict[str, Any]:
    """``circuit.json`` checked: ``model``, ``nodes``, ``edges``, ``settings``."""
    f, d = _document(Path(folder) / CIRCUIT)
    model = f.string(f.get(d, "model"), "model")
    settings = f.obj(d.get("settings"), "settings", null=True)
    nodes = f.items(f.get(d, "nodes"), "nodes")
    ids: set[str] = set()
    for i, n in enumerate(nodes):
        w = f"nodes[{i}]"
        n = f.obj(n, w)
        node = f.string(f.get(n, "id", w), f"{w}.id", empty=False)
        if node in ids:
            f.fail(f"{w}.id", repr(node), "an id no other node has")
        ids.add(node)
        kind = f.get(n, "kind", w)
        if kind not in NODE_KINDS:
            f.fail(f"{w}.kind", _show(kind), f"one of {', '.join(NODE_KINDS)}")
        layer = f.whole(f.get(n, "layer", w), f"{w}.layer", 0, MAX_LAYERS)
        if kind == "head":
            head = f.whole(f.get(n, "head", w), f"{w}.head", 0, MAX_HEADS - 1, " (a head node's head)")
            if _head_at(node) != (layer, head):  # the label, read by the parser that reads every head label
                f.fail(f"{w}.id", repr(node), f"{head_label(layer, head)!r}, the label of its layer and head")
        else:
            f.integer(n.get("head"), f"{w}.head", 0, MAX_HEADS - 1, null=True)
        f.number(n.get("effect"), f"{w}.effect", null=True)
    edges = f.items(f.get(d, "edges"), "edges")
    for i, e in enumerate(edges):
        w = f"edges[{i}]"
        e = f.obj(e, w)
        for end in ("source", "target"):
            if f.get(e, end, w) not in ids:
                f.fail(f"{w}.{end}", _show(e[end]), "the id of one of the nodes")
        f.number(f.get(e, "score", w), f"{w}.score", null=True)
    return {"model": model, "nodes": nodes, "edges": edges, "settings": settings}


# -- one-table results (PatchingResult, AttributionResult, AblationResult) ------------------------
_INDEX = Column("int", null=True, low=-1, high=MAX_POSITION)
TABLE_COLUMNS: dict[str, dict[str, Column]] = {
    "patching": {"site": Column("str"), "layer": Column("int", low=0, high=MAX_LAYERS - 1),
                 "head": Column("int", null=True, low=-1, high=MAX_HEADS - 1), "position": _INDEX,
                 "effect": Column("float", null=True), "metric": Column("float", null=True)},
    "attribution": {"site": Column("str"), "layer": Column("int", low=0, high=MAX_LAYERS - 1),
                    "head": Column("int", null=True, low=0, high=MAX_HEADS - 1),
                    "neuron": Column("int", null=True, low=0, high=MAX_NEURONS - 1), "position": _INDEX,
                    "effect": Column("float", null=True)},
    "ablation": {"layer": Column("int", low=0, high=MAX_LAYERS - 1), "head": Column("int", low=0, high=MAX_HEADS - 1),
                 "method": Column("str"), "metric": Column("float", null=True), "effect": Column("float", null=True)},
}


def _table_meta(f: Fields, name: str, meta: dict[str, Any]) -> None:
    keys = {"patching": ("clean_metric", "corrupted_metric", "direction", "tokens"),
            "attribution": ("clean_metric", "corrupted_metric"), "ablation": ("method", "base_metric")}[name]
    extra = [k for k in meta if k not in keys]
    if extra:
        f.fail(f"key {extra[0]!r}", "not one this result has", f"the keys {', '.join(keys)} (and rows)")
    for key in keys:
        value = f.get(meta, key)
        if key.endswith("metric"):
            f.number(value, key, null=True)
        elif key == "tokens":
            for i, t in enumerate(f.items(value, key)):
                f.string(t, f"tokens[{i}]")
        else:
            f.string(value, key)


def table_result(folder: str | os.PathLike[str], name: str) -> tuple[pd.DataFrame, dict[str, Any]]:
    """``NAME.json`` (the numbers) and ``NAME.parquet`` (the table) of a ``TableResult`` checked."""
    folder = Path(folder)
    f, meta = _document(folder / f"{name}.json")
    meta = {k: v for k, v in meta.items() if k != "rows"}
    columns = TABLE_COLUMNS.get(name, {})
    if name in TABLE_COLUMNS:
        _table_meta(f, name, meta)
    df = read_table(folder / f"{name}.parquet", columns)
    if name == "patching" and meta["tokens"] and len(df):
        t = Fields(folder / f"{name}.parquet")
        n = len(meta["tokens"])
        positions = df["position"].to_numpy(dtype=float, na_value=float("nan"))
        import numpy as np

        bad = np.flatnonzero(positions >= n)
        if len(bad):
            t.fail(f"column 'position', row {bad[0]},", _show(df["position"].iloc[bad[0]]),
                   f"a position in -1..{n - 1} (patching.json lists {n} tokens)")
    return df, meta


# -- an ICL circuit report (ICLResult) -----------------------------------------------------------
ICL = "icl.json"
# The tables of icl.json, by name, with their columns (ICLResult writes them).
ICL_TABLES: dict[str, tuple[str, ...]] = {
    "accuracy": ("dataset", "k", "accuracy", "n"),
    "summarize": ("dataset", "layer", "alignment"),
    "merge": ("dataset", "layer", "heads_above", "mean_score"),
    "retrieval": ("dataset", "layer", "induction_heads", "correct_induction_heads"),
    "heads": ("dataset", "layer", "head", "merge", "retrieval", "correct"),
    "ablation": ("dataset", "step", "matched_step", "quarter", "layers", "edges", "accuracy", "baseline_accuracy", "drop",
                 "seed"),
}
_ICL_INTS = {"k": (0, None), "n": (0, None), "quarter": (0, None), "edges": (0, None)}


def icl(folder: str | os.PathLike[str], *, every_table: bool = False) -> dict[str, Any]:
    """``icl.json`` (and ``patching.parquet`` when there) checked. ``every_table``: each table of
    ``ICL_TABLES`` must be there (a reader that draws them all); else a missing one is empty."""
    folder = Path(folder)
    f, d = _document(folder / ICL)
    needed = ("model", *ICL_TABLES) if every_table else ("model",)
    missing = [k for k in needed if k not in d]
    if missing:
        f.lacks("", missing, needed)
    model = f.string(d["model"], "model")
    settings = f.obj(d.get("settings"), "settings", null=True)
    versions = d.get("versions")
    if versions is not None:
        f.obj(versions, "versions")
    shape = f.obj(d.get("shape"), "shape", null=True)
    layers = f.whole(shape.get("layers", 0), "shape.layers", 0, MAX_LAYERS)
    heads = f.whole(shape.get("heads", 0), "shape.heads", 0, MAX_HEADS)
    f.grid(layers, heads, "shape")
    size = {"layer": (layers or MAX_LAYERS, f"shape.layers is {layers}" if layers else "no shape is recorded"),
            "head": (heads or MAX_HEADS, f"shape.heads is {heads}" if heads else "no shape is recorded")}
    tables: dict[str, list[dict[str, Any]]] = {}
    top = {"layer": -1, "head": -1}
    for t, keys in ICL_TABLES.items():
        if t not in d and not every_table:
            tables[t] = []
            continue
        rows = f.items(f.get(d, t), t)
        for i, r in enumerate(rows):
            w = f"{t}[{i}]"
            r = f.row(r, w, keys)
            for key in keys:
                value = r[key]
                if key == "dataset":
                    f.string(value, f"{w}.{key}")
                elif key in size:
                    n, why = size[key]
                    top[key] = max(top[key], f.index(value, f"{w}.{key}", n, key, why))
                elif key in _ICL_INTS:
                    f.whole(value, f"{w}.{key}", *_ICL_INTS[key])
                elif key == "seed":
                    f.integer(value, f"{w}.{key}", None, None, null=True)
                elif key in ("step", "matched_step"):
                    f.text(value, f"{w}.{key}", null=True)
                elif key == "layers":
                    if not isinstance(value, str):
                        for j, la in enumerate(f.items(value, f"{w}.{key}")):
                            f.whole(la, f"{w}.{key}[{j}]", 0, MAX_LAYERS - 1)
                else:
                    f.scalar(value, f"{w}.{key}")
        tables[t] = rows
    if not (layers and heads):
        f.grid(layers or top["layer"] + 1, heads or top["head"] + 1, "the layers and heads of the tables")
    patching = None
    ppath = folder / "patching.parquet"
    if ppath.exists():
        patching = icl_patching(ppath, layers, heads)
    summary = None
    about = d.get("patching")
    if about is not None:
        about = f.obj(about, "patching")
        summary = f.obj(about.get("datasets"), "patching.datasets", null=True)
        for ds, v in summary.items():
            f.obj(v, f"patching.datasets[{ds!r}]")
    return {"model": model, "settings": settings, "versions": versions, "n_layers": layers, "n_heads": heads,
            "tables": tables, "patching": patching, "patching_summary": summary if about is not None else None}


def icl_patching(path: Path, layers: int = 0, heads: int = 0) -> pd.DataFrame:
    """``patching.parquet`` of an ICL report: per-head rows at ``blocks.*.attn.hook_z`` (head ≥ 0)
    and whole-layer rows (head −1), positions from −1 (every position at once); within the
    report's shape when it records one."""
    import numpy as np

    columns = {"site": Column("str"), "layer": Column("int", low=0, high=(layers or MAX_LAYERS) - 1),
               "head": Column("int", low=-1, high=(heads or MAX_HEADS) - 1),
               "position": Column("int", low=-1, high=MAX_POSITION), "effect": Column("float", null=True)}
    optional = {"dataset": Column("str"), "token": Column("str", null=True), "metric": Column("float", null=True)}
    df = read_table(path, columns, optional)
    per_head = df["site"].astype(str).map(lambda site: head_axis(site) is not None)
    bad = np.flatnonzero(per_head.to_numpy() & (df["head"].to_numpy() < 0))
    if len(bad):
        Fields(path).fail(f"column 'head', row {bad[0]},", str(df["head"].iloc[bad[0]]),
                          f"a head in 0..{(heads or MAX_HEADS) - 1} at {df['site'].iloc[bad[0]]}, a site with a head axis")
    if not heads and len(df):
        Fields(path).grid(int(df["layer"].max()) + 1, int(df["head"].max()) + 1, "the layers and heads of the table")
    return df


# -- the context knob (KnobResult) ---------------------------------------------------------------
KNOB = "knob.json"
DIRECTIONS = "direction.safetensors"
SWEEP_METHODS = ("das", "diff_means", "random")
# The keys of knob.json, of its items, sweep rows and patching rows (KnobResult writes them).
KNOB_KEYS = ("model", "accuracy", "layers", "layer", "flip_rate", "random_flip_rate", "correlation", "patching", "sweep",
        "items")
KNOB_ITEM_KEYS = ("context", "question", "prior_answer", "context_answer")
KNOB_SWEEP_KEYS = ("method", "value", "context_share", "prior_share")
KNOB_PATCHING_KEYS = ("layer", "effect")


def knob(folder: str | os.PathLike[str], *, full: bool = True) -> dict[str, Any]:
    """``knob.json`` checked. ``full``: every key ``KnobResult.load`` reads; else the keys the
    app draws (``KNOB_KEYS``), with sweep methods das, diff_means, random."""
    f, d = _document(Path(folder) / KNOB)
    missing = [k for k in KNOB_KEYS if k not in d]
    if missing:
        f.lacks("", missing, KNOB_KEYS)
    f.string(d["model"], "model")
    accuracy = f.obj(d["accuracy"], "accuracy")
    for key in ("prior", "context"):
        f.number(f.get(accuracy, key, "accuracy"), f"accuracy.{key}", null=True)
    for key in ("flip_rate",) + (("correlations",) if full else ()):
        for name, v in f.obj(f.get(d, key), key).items():
            f.number(v, f"{key}[{name!r}]", null=True)
    f.number(d["random_flip_rate"], "random_flip_rate", null=True)
    f.number(d["correlation"], "correlation", null=True)
    patching = f.items(d["patching"], "patching")
    n_layers = 0
    for i, r in enumerate(patching):
        r = f.row(r, f"patching[{i}]", KNOB_PATCHING_KEYS)
        n_layers = max(n_layers, f.whole(r["layer"], f"patching[{i}].layer", 0, MAX_LAYERS - 1) + 1)
        f.number(r["effect"], f"patching[{i}].effect", null=True)
        if "pairing" in r:
            f.string(r["pairing"], f"patching[{i}].pairing")
    size, why = (n_layers, f"patching covers {n_layers} layers") if n_layers else (MAX_LAYERS, "no patching rows")
    f.index(d["layer"], "layer", size, "layer", why)
    for i, la in enumerate(f.items(d["layers"], "layers")):
        f.index(la, f"layers[{i}]", size, "layer", why)
    for i, r in enumerate(f.items(d["sweep"], "sweep")):
        w = f"sweep[{i}]"
        r = f.row(r, w, KNOB_SWEEP_KEYS)
        method = f.string(r["method"], f"{w}.method")
        if not full and method not in SWEEP_METHODS:
            f.fail(f"{w}.method", _show(method), f"one of {', '.join(SWEEP_METHODS)}")
        f.number(r["value"], f"{w}.value")
        for key in ("context_share", "prior_share", "context_share_prior", "context_share_context"):
            f.number(r.get(key), f"{w}.{key}", null=True)
        if "k" in r:
            f.number(r["k"], f"{w}.k")
    for i, it in enumerate(f.items(d["items"], "items")):
        w = f"items[{i}]"
        it = f.row(it, w, KNOB_ITEM_KEYS)
        for key in KNOB_ITEM_KEYS:
            f.string(it[key], f"{w}.{key}")
        if "subject" in it:
            f.string(it["subject"], f"{w}.subject")
    if full:
        settings = f.obj(f.get(d, "settings"), "settings")
        f.string(f.get(settings, "site", "settings"), "settings.site", empty=False)
        for p, loc in f.obj(f.get(d, "localisation"), "localisation").items():
            w = f"localisation[{p!r}]"
            loc = f.obj(loc, w)
            for j, la in enumerate(f.items(f.get(loc, "layers", w), f"{w}.layers")):
                f.index(la, f"{w}.layers[{j}]", size, "layer", why)
            for key in ("recovery", "full_recovery"):
                f.number(f.get(loc, key, w), f"{w}.{key}", null=True)
            for j, v in enumerate(f.items(f.get(loc, "single_layer", w), f"{w}.single_layer")):
                f.number(v, f"{w}.single_layer[{j}]", null=True)
            f.items(loc.get("runs") or [], f"{w}.runs")
        for i, v in enumerate(f.items(f.get(d, "random_flip_rates"), "random_flip_rates")):
            f.number(v, f"random_flip_rates[{i}]", null=True)
        f.whole(f.get(d, "das_train_items"), "das_train_items", 0)
    return d


def directions(path: str | os.PathLike[str], names: Sequence[str] | None = None) -> dict[str, torch.Tensor]:
    """The tensors of a knob's ``direction.safetensors`` (``names``: only those), each checked to
    be a non-zero finite vector of at most ``MAX_VECTOR`` entries before it is read."""
    import torch
    from safetensors import safe_open

    path = Path(path)
    f = Fields(path)
    if not path.is_file():
        raise BadReportError(f"no {path.name} in {path.parent}: the knob needs the direction to steer")
    if path.stat().st_size > MAX_SAFETENSORS_BYTES:
        f.fail("the file", f"{path.stat().st_size} bytes", f"at most {MAX_SAFETENSORS_BYTES} bytes")
    out = {}
    try:
        with safe_open(str(path), "pt") as st:
            keys = list(st.keys())
            for key in keys if names is None else [n for n in names if n in keys]:
                shape = st.get_slice(key).get_shape()
                if math.prod(shape) > MAX_VECTOR or sum(s > 1 for s in shape) > 1:
                    f.fail(f"tensor {key!r}", f"of shape {list(shape)}", f"a vector of at most {MAX_VECTOR} entries")
                out[key] = st.get_tensor(key)
    except BadReportError:
        raise
    except Exception as exc:  # safetensors raises its own types for damaged files
        raise BadReportError(f"cannot read {path}: {exc}") from None
    for key, t in out.items():
        if not t.is_floating_point():
            f.fail(f"tensor {key!r}", f"of dtype {t.dtype}", "a floating-point vector")
        if not bool(torch.isfinite(t).all()):
            f.fail(f"tensor {key!r}", "a vector with NaN or infinite entries", "a vector of finite numbers")
        if not bool((t != 0).any()):
            f.fail(f"tensor {key!r}", "a vector of zeros", "a vector with a direction (not all zero)")
    return out


# -- a decode table (NeuronTable) ----------------------------------------------------------------
NEURONS_JSON, NEURONS_TABLE = "neurons.json", "neurons.parquet"


def neurons_table(path: str | os.PathLike[str], *, token_ids: bool = True) -> pd.DataFrame:
    """``neurons.parquet`` checked: ``layer, neuron, rank, token, prob`` (and ``token_id``)."""
    columns = {"layer": Column("int", low=0, high=MAX_LAYERS - 1), "neuron": Column("int", low=0, high=MAX_NEURONS - 1),
               "rank": Column("int", low=1, high=MAX_RANK), "token": Column("str"),
               "prob": Column("float", low=0, high=1)}
    token_id = {"token_id": Column("int", low=0, high=1 << 40)}
    return read_table(path, {**columns, **token_id} if token_ids else columns, {} if token_ids else token_id)


def neurons(folder: str | os.PathLike[str]) -> tuple[pd.DataFrame, dict[str, Any]]:
    """``neurons.json`` (title, page depth, settings) and ``neurons.parquet`` checked."""
    folder = Path(folder)
    f, meta = _document(folder / NEURONS_JSON)
    f.string(f.get(meta, "title"), "title")
    f.whole(meta.get("k_html", 5), "k_html", 1, MAX_RANK)
    f.obj(meta.get("settings"), "settings", null=True)
    return neurons_table(folder / NEURONS_TABLE), meta


# -- a timeline (Timeline) and a sweep's table ---------------------------------------------------
TIMELINE_COLUMNS = ["step", "layer", "head", "score", "value"]
TIMELINE_TABLE, TIMELINE_META = "timeline.parquet", "timeline.json"


def timeline(folder: str | os.PathLike[str]) -> tuple[pd.DataFrame, dict[str, Any]]:
    """``timeline.parquet`` and ``timeline.json`` checked (checkpoint folders are plain names
    next to the timeline, steps are distinct; the figure's scores are among the table's)."""
    folder = Path(folder)
    f, meta = _document(folder / TIMELINE_META)
    df = read_table(folder / TIMELINE_TABLE, {"step": Column("int", low=0), "layer": Column("int", low=0, high=MAX_LAYERS - 1),
                                     "head": Column("int", low=0, high=MAX_HEADS - 1), "score": Column("str"),
                                     "value": Column("float", null=True)})
    steps: set[int] = set()
    for i, c in enumerate(f.items(f.get(meta, "checkpoints"), "checkpoints")):
        w = f"checkpoints[{i}]"
        c = f.obj(c, w)
        step = f.whole(f.get(c, "step", w), f"{w}.step", 0)
        if step in steps:
            f.fail(f"{w}.step", str(step), "a step no other checkpoint has")
        steps.add(step)
        f.name(f.get(c, "folder", w), f"{w}.folder")
    scores = set(df["score"].astype(str))
    for i, s in enumerate(f.items(meta.get("figure_scores") or [], "figure_scores", limit=64)):
        if f.string(s, f"figure_scores[{i}]") not in scores:
            f.fail(f"figure_scores[{i}]", _show(s), f"one of the table's scores: {', '.join(sorted(scores)) or 'none'}")
    f.obj(meta.get("settings"), "settings", null=True)
    return _ints(df[TIMELINE_COLUMNS], ("step", "layer", "head")), meta


def sweep_table(path: str | os.PathLike[str]) -> pd.DataFrame:
    """A sweep's ``heads.parquet`` (``model, score, layer, head, value``) checked, each model's
    layers × heads within ``MAX_GRID``."""
    df = read_table(path, {"model": Column("str"), "score": Column("str"),
                           "layer": Column("int", low=0, high=MAX_LAYERS - 1),
                           "head": Column("int", low=0, high=MAX_HEADS - 1), "value": Column("float", null=True)})
    for model, part in df.groupby("model", sort=False):
        Fields(path).grid(int(part["layer"].max()) + 1, int(part["head"].max()) + 1, f"model {model!r}")
    return _ints(df, ("layer", "head"))


# -- activations (probes.collect) ----------------------------------------------------------------
def activations_manifest(path: str | os.PathLike[str]) -> dict[str, Any]:
    """An activation folder's manifest checked: ``sites`` (names), ``shards`` (plain file names
    next to it, with their example counts), ``labels``."""
    f, meta = _document(Path(path))
    for i, s in enumerate(f.items(f.get(meta, "sites"), "sites")):
        f.string(s, f"sites[{i}]", empty=False)
    if not meta["sites"]:
        f.fail("sites", "an empty list", "at least one site")
    for i, s in enumerate(f.items(f.get(meta, "shards"), "shards")):
        s = f.obj(s, f"shards[{i}]")
        f.name(f.get(s, "file", f"shards[{i}]"), f"shards[{i}].file")
        f.whole(f.get(s, "examples", f"shards[{i}]"), f"shards[{i}].examples", 0)
    f.flag(f.get(meta, "labels"), "labels")
    return meta

