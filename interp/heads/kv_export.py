"""Head patterns for KV-cache compression libraries, in DuoAttention's file layout.

DuoAttention (Xiao et al., 2024) ships a pattern per model as a folder with
``full_attention_heads.tsv`` (one row per layer, one tab-separated value in 0..1 per kv head:
how much that head needs its full cache) and ``config.json`` (``sink_size``, ``recent_size``: the
streaming heads' cache). NVIDIA's kvpress ``DuoAttentionPress`` reads exactly these: it loads the
TSV with ``numpy.loadtxt(..., delimiter="\\t")``, clips it to 0..1 and turns the
``round(head_compression_ratio * n)`` lowest kv heads into streaming heads. ``write_kv_pattern``
writes a head scan's retrieval scores (a kv head takes its query group's highest) in that layout;
sliding-window layers are written as 1 (no compression beyond their own window).

>>> scores = interp.heads.HeadScores.load("reports/smollm2")             # doctest: +SKIP
>>> write_kv_pattern(scores, "reports/smollm2/kv_pattern")               # doctest: +SKIP
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from interp.heads.settings import STREAMING_DEFAULTS
from interp.results.folders import OutputFolder, writing
from interp.results.strict_json import dumps

if TYPE_CHECKING:
    from interp.heads.table import HeadScores

TSV, CONFIG = "full_attention_heads.tsv", "config.json"
EXPORTS = ("kv-pattern",)


def write_kv_pattern(scores: HeadScores, dest: str | os.PathLike[str] | OutputFolder, *, score: str = "retrieval",
                     sink: int | None = None, window: int | None = None, model: Any = None,
                     force: bool = False) -> Path:
    """Write ``score`` per kv head (``HeadScores.kv_pattern``) as ``full_attention_heads.tsv`` and
    the streaming cache (``sink``, ``window``: default the scan's streaming settings, else 4 and
    256) as ``config.json`` into ``dest``; returns the folder."""
    streaming = scores.settings.get("streaming") or STREAMING_DEFAULTS
    sink = int(streaming["sink"] if sink is None else sink)
    window = int(streaming["window"] if window is None else window)
    values = scores.kv_pattern(score, model=model)
    bounded = [int(la) for la in values.index[values.isna().all(axis=1)]]
    full = np.clip(values.fillna(1.0).to_numpy(), 0.0, 1.0)
    tsv = "".join("\t".join(f"{v:.6f}" for v in row) + "\n" for row in full)
    config = {"sink_size": sink, "recent_size": window, "score": score, "model": scores.model,
              "layers": int(full.shape[0]), "kv_heads": int(full.shape[1]), "sliding_window_layers": bounded,
              "written_by": "interp"}
    with writing(dest, force=force, kind="kv_pattern") as out:
        out.write_text(TSV, tsv)
        out.write_text(CONFIG, dumps(config, indent=1) + "\n")
        return out.path


def load_kv_pattern(folder: str | os.PathLike[str]) -> tuple[dict[str, Any], np.ndarray]:
    """Returns ``(config, scores [layers, kv_heads])`` of a pattern folder, the TSV read as kvpress
    reads a DuoAttention pattern (``loadtxt`` with tabs, clipped to 0..1); a model with one kv head
    per layer keeps its column shape here (``ndmin=2``), where plain ``loadtxt`` gives a vector.
    A file that is not JSON or not a table of numbers raises ``ValueError``."""
    folder = Path(folder)
    config = json.loads((folder / CONFIG).read_text())
    text = (folder / TSV).read_text()
    return config, np.clip(np.loadtxt(io.StringIO(text), dtype=float, delimiter="\t", ndmin=2), 0, 1)


def read_kv_pattern(folder: str | os.PathLike[str]) -> tuple[int, int, np.ndarray]:
    """Returns ``(sink_size, recent_size, scores [layers, kv_heads])`` of a pattern folder that
    names both sizes (``load_kv_pattern``)."""
    config, values = load_kv_pattern(folder)
    return int(config["sink_size"]), int(config["recent_size"]), values
