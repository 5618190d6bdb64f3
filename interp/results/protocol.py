"""One result protocol: every analysis result saves to a folder, loads back, and draws itself.

A result class (``HeadScores``, ``Circuit``, ``PatchingResult``, ...) has

- ``save(folder, *, force=False)``: writes its files into ``folder`` (a path or an open
  :class:`interp.results.folders.OutputFolder`) through :func:`interp.results.folders.writing` (users' files
  there are never touched), JSON through :func:`write_json` (strict: NaN and infinities are
  written as ``null``) and tables through :func:`write_table`; returns the folder;
- ``load(folder)`` (a classmethod): reads the folder back through the validating reader
  (:mod:`interp.results.reading`); ``load(folder).to_dict()`` equals ``finite(result.to_dict())``
  of the result that was saved;
- ``to_dict()``: the result as plain JSON-ready data (the one name: no ``to_json``);
- ``figures()``: a dict ``name -> plotly Figure``.

Scripts (benchmarks, case studies) write their outputs the same way: ``with
interp.results.folders.output_folder(out, kind=...) as o:`` then :func:`write_json`, :func:`write_table`
and ``o.write_text`` for the rest.

Examples:
    >>> import tempfile
    >>> from interp.circuits.graph import Circuit
    >>> c = Circuit("m", [{"id": "L0H1", "kind": "head", "layer": 0, "head": 1, "effect": float("nan")}], [])
    >>> isinstance(c, Result)
    True
    >>> folder = c.save(tempfile.mkdtemp() + "/circuit")
    >>> Circuit.load(folder).nodes[0]["effect"] is None
    True
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from interp.results.folders import writing
from interp.results.reading import read_json as read
from interp.results.reading import table_result
from interp.results.strict_json import dumps, finite

if TYPE_CHECKING:
    from interp.results.folders import OutputFolder

Folder = str | os.PathLike[str]

#: Every result class following the protocol, as ``module:Class`` (tests/test_results.py checks each).
RESULTS = (
    "interp.circuits.graph:Circuit",
    "interp.circuits.patching:PatchingResult",
    "interp.circuits.report:ICLResult",
    "interp.probes.knob:KnobResult",
    "interp.heads.table:HeadScores",
    "interp.neurons.report:NeuronTable",
    "interp.circuits.attribution:AttributionResult",
    "interp.circuits.ablation:AblationResult",
    "interp.heads.timeline:Timeline",
)


def result_classes() -> list[type]:
    """The classes named in :data:`RESULTS` (imported on call)."""
    import importlib

    out = []
    for spec in RESULTS:
        module, name = spec.split(":")
        out.append(getattr(importlib.import_module(module), name))
    return out


@runtime_checkable
class Result(Protocol):
    """What every analysis result offers (see the module docstring)."""

    def save(self, folder: Any, *, force: bool = False) -> Path: ...

    @classmethod
    def load(cls, folder: Any) -> Any: ...

    def to_dict(self) -> dict[str, Any]: ...

    def figures(self) -> dict[str, Any]: ...


class TableResult:
    """A result that is one tidy table plus a few numbers (``meta``): saved as ``NAME.parquet``
    (the table) and ``NAME.json`` (strict JSON: the numbers and the rows). Indexing reads the
    table (``result["effect"]`` is ``result.df["effect"]``). Subclasses set ``NAME`` and draw
    ``figures()``."""

    NAME = "table"

    def __init__(self, df: Any, **meta: Any):
        self.df, self.meta = df, meta

    def __getitem__(self, key: Any) -> Any:
        return self.df[key]

    def __len__(self) -> int:
        return len(self.df)

    def __repr__(self) -> str:
        numbers = ", ".join(f"{k}={v!r}" for k, v in self.meta.items())
        return f"{type(self).__name__}({len(self.df)} rows, {numbers})"

    def to_dict(self) -> dict[str, Any]:

        return finite({**self.meta, "rows": self.df.to_dict("records")})

    def save(self, folder: Folder | OutputFolder, *, force: bool = False) -> Path:
        """Write ``NAME.parquet`` and ``NAME.json`` into ``folder`` (other files left alone)."""

        with writing(folder, force=force, kind=self.NAME) as out:
            write_table(out, f"{self.NAME}.parquet", self.df)
            write_json(out, f"{self.NAME}.json", self.to_dict())
        return out.path

    @classmethod
    def load(cls, folder: Folder) -> Any:
        """Read a folder written by :meth:`save` (the table from its parquet, no pickle)."""

        df, meta = table_result(folder, cls.NAME)  # checked: types, ranges, sizes (BadReportError)
        return cls(df, **meta)

    def figures(self) -> dict[str, Any]:
        raise NotImplementedError


def figure_html(fig: Any, name: str, **kwargs: Any) -> str:
    """``fig.to_html(**kwargs)`` with a div id made from ``name`` (plotly's default is random),
    so a page written twice from the same result is byte-identical. ``name`` may be any text (a
    score name from a file): only its letters, digits, ``-`` and ``_`` reach the page, and a
    digest of the whole name keeps the ids of two names apart.

    >>> import plotly.graph_objects as go
    >>> 'id="figure-x-script--' in figure_html(go.Figure(), "x<script>", full_html=False)
    True
    """
    import hashlib
    import re

    digest = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    return fig.to_html(div_id=f"figure-{re.sub(r'[^A-Za-z0-9_-]', '-', name)[:60]}-{digest}", **kwargs)


def write_json(out: OutputFolder, name: str, doc: Any, *, indent: int | None = 1, end: str = "\n",
               **kwargs: Any) -> Path:
    """Write ``doc`` as strict JSON (NaN and infinities as null) into ``out`` as ``name``: the one
    JSON file writer. The text is ``json.dumps(doc, indent=indent, **kwargs)`` followed by ``end``.

    >>> import tempfile
    >>> from interp.results.folders import output_folder
    >>> with output_folder(tempfile.mkdtemp() + "/r") as out:
    ...     path = write_json(out, "x.json", {"v": float("nan")})
    >>> path.read_text()
    '{\\n "v": null\\n}\\n'
    """
    return out.write_text(name, dumps(doc, indent=indent, **kwargs) + end)


def write_table(out: OutputFolder, name: str, df: Any, *, metadata: dict[str, Any] | None = None) -> Path:
    """Write the DataFrame ``df`` as parquet (no index) into ``out`` as ``name``: the one parquet
    writer (every result and script table goes through it). ``metadata``: ``{key: value}`` kept in
    the file's schema metadata as ``interp.KEY`` (the value as strict JSON), after pandas' own.

    >>> import tempfile, pandas as pd, pyarrow.parquet as pq
    >>> from interp.results.folders import output_folder
    >>> with output_folder(tempfile.mkdtemp() + "/t") as out:
    ...     path = write_table(out, "t.parquet", pd.DataFrame({"v": [0.5]}), metadata={"seed": 0})
    >>> pq.read_schema(path).metadata[b"interp.seed"]
    b'0'
    """
    import io

    buf = io.BytesIO()
    if metadata is None:
        df.to_parquet(buf, index=False)
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.Table.from_pandas(df, preserve_index=False)
        meta = {**(table.schema.metadata or {}),
                **{f"interp.{key}".encode(): dumps(value).encode() for key, value in metadata.items()}}
        pq.write_table(table.replace_schema_metadata(meta), buf)
    return out.write_bytes(name, buf.getvalue())


def read_json(folder: Folder, name: str) -> Any:
    """Read ``name`` from ``folder`` (strict JSON; ``null`` stays ``None``): a missing, oversized
    or non-strict file raises ``interp.errors.BadReportError`` (``interp.results.reading.read_json``)."""

    return read(Path(folder) / name)
