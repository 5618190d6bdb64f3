"""A head-wise KV cache that saves memory: retrieval heads keep everything, the rest stream.

``compressed`` measures what a DuoAttention-style cache does to a model through the attention
mask and saves nothing. ``headwise_cache`` is that cache for real: a transformers ``Cache``
(``interp.core.headwise.HeadwiseCache``) whose streaming kv heads hold only their first ``sink``
and last ``window`` keys, so a prompt costs ``full heads x tokens`` plus a constant. It computes
what ``compressed`` computes (the same tokens, ``hook_z`` to float rounding), through plain
``generate``:

>>> import interp
>>> model = interp.load("smollm2-135m")                                        # doctest: +SKIP
>>> keep = interp.heads.HeadScores.load("reports/smollm2").keep_full("retrieval", 0.25, model=model)  # doctest: +SKIP
>>> cache = interp.heads.headwise_cache(model, keep)                           # doctest: +SKIP
>>> out = model.hf.generate(**tokens, past_key_values=cache, max_new_tokens=16,
...                         prefill_chunk_size=512)                            # doctest: +SKIP
>>> cache.nbytes()                                                             # doctest: +SKIP

A cache serves one ``generate`` (or one sequence of forwards): make a new one for each prompt.
Prefill in chunks (``prefill_chunk_size``) so the streaming heads never hold the whole prompt.

``keep_full`` is a bool ``[layers, kv_heads]`` array (``HeadScores.keep_full``) or a pattern read
by ``read_pattern``: interp's ``--export kv-pattern`` folder, DuoAttention's released folders
(``full_attention_heads.tsv`` + ``config.json``) and Retrieval_Head / HeadKV JSON files.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from interp.core.headwise import HeadwiseCache
from interp.core.model import Model
from interp.errors import BadInputError, real_number, whole_number
from interp.heads.compression import SINK, WINDOW, check_keep_full, sliding_windows
from interp.heads.kv_export import CONFIG, TSV, load_kv_pattern


def headwise_cache(model: Model, keep_full: Any, sink: int | None = None, window: int | None = None, *,
                   share: float | None = None, threshold: float | None = None) -> HeadwiseCache:
    """A new transformers ``Cache`` for ``model`` that keeps every key of the kv heads in
    ``keep_full`` (bool ``[layers, kv_heads]``) and, for every other kv head of a layer without
    a sliding window, its first ``sink`` real keys and last ``window`` keys (``window`` counts the
    query, as ``compressed`` and a sliding window do). Sliding-window layers keep transformers'
    own sliding cache. The pattern is checked against the model here, before any forward.

    ``keep_full`` may also be a pattern on disk (``read_pattern``: a kv-pattern folder or a
    Retrieval_Head/HeadKV JSON file) with ``share`` or ``threshold``; ``sink`` and ``window``
    then default to the pattern's ``sink_size`` and ``recent_size`` where it has them. Default
    otherwise: 4 and 256 (DuoAttention's). Returns the ``HeadwiseCache``, empty: pass it to one
    ``generate`` (``cache=``/``past_key_values=``) or ``model.generate(..., cache=...)``."""
    streaming: dict[str, int] = {}
    if isinstance(keep_full, (str, os.PathLike)):
        keep_full, streaming = read_pattern(keep_full, model, share=share, threshold=threshold)
    elif share is not None or threshold is not None:
        raise BadInputError("share= and threshold= choose heads from a pattern file; keep_full is already a choice "
                            "(a bool [layers, kv_heads] array)")
    keep = check_keep_full(model, keep_full)
    sink = whole_number(streaming.get("sink", SINK) if sink is None else sink, 0, "sink")
    window = whole_number(streaming.get("window", WINDOW) if window is None else window, 1, "window")
    implementation = str(model.hf.config._attn_implementation)
    if not implementation.startswith("interp_"):
        raise BadInputError(f"{model.name} runs attention {implementation!r}; a head-wise cache needs interp's "
                            "attention function (interp.load or interp.Model installs it)")
    group = model.cfg.n_heads // model.cfg.n_kv_heads
    return HeadwiseCache(model.hf.config, keep.tolist(), group, sink, window, bounded=sorted(sliding_windows(model)))


def full_cache_bytes(model: Model, n_tokens: int, batch: int = 1) -> int:
    """Bytes of a full (``DynamicCache``) cache of ``n_tokens``: keys and values of every kv head,
    sliding-window layers holding their window less one, as transformers keeps them."""
    import torch

    d = model.cfg.d_head
    size = torch.empty((), dtype=next(model.hf.parameters()).dtype).element_size()
    total = 0
    for layer in range(model.cfg.n_layers):
        w = model.sliding_window(layer)
        total += 2 * batch * model.cfg.n_kv_heads * d * (n_tokens if w is None else min(n_tokens, w - 1)) * size
    return total


# -- patterns from files -------------------------------------------------------------------------

def _layout(model: Any) -> tuple[int, int, int]:
    return model.cfg.n_layers, model.cfg.n_heads, model.cfg.n_kv_heads


def _choose(values: np.ndarray, model: Model, share: float | None, threshold: float | None, source: str) -> np.ndarray:
    """Bool ``[layers, kv_heads]`` from per-kv-head scores (high: needs the full cache): the top
    ``share`` of the kv heads outside sliding-window layers, or those at or above ``threshold``."""
    if (share is None) == (threshold is None):
        raise BadInputError(f"{source} holds scores; pass exactly one of share= (the share of kv heads kept full, "
                            "0..1) or threshold= (keep the kv heads scoring at least this)")
    bounded = sliding_windows(model)
    free = np.array([[la, h] for la in range(values.shape[0]) if la not in bounded for h in range(values.shape[1])],
                    dtype=int).reshape(-1, 2)
    keep = np.zeros(values.shape, dtype=bool)
    if threshold is not None:
        t = real_number(threshold, "threshold")
        keep[free[:, 0], free[:, 1]] = values[free[:, 0], free[:, 1]] >= t
        return keep
    n = int(round(real_number(share, "share", 0, 1) * len(free)))
    order = np.argsort(-values[free[:, 0], free[:, 1]], kind="stable")[:n]
    keep[free[order, 0], free[order, 1]] = True
    return keep


def read_pattern(source: str | os.PathLike[str], model: Model, *, share: float | None = None,
                 threshold: float | None = None) -> tuple[np.ndarray, dict[str, int]]:
    """Returns ``(keep_full, streaming)`` read from the pattern at ``source`` (a folder or a JSON
    file, below), checked against ``model`` before any forward: ``keep_full`` a bool array
    ``[layers, kv_heads]``, ``streaming`` ``{"sink": .., "window": ..}`` where the pattern says
    (else empty).

    - a folder with ``full_attention_heads.tsv`` and ``config.json``: interp's
      ``--export kv-pattern`` or DuoAttention's released patterns (one row per layer, one value
      per kv head in 0..1; ``sink_size``/``recent_size``). Rows must match the model's layers and
      columns its kv heads;
    - a JSON file ``{"layer-head": [scores] or score}`` (Retrieval_Head, HeadKV): one entry per
      query head; a kv head takes its query group's highest mean score.

    The values are scores: ``share`` keeps that share of the kv heads (outside sliding-window
    layers) with the highest, ``threshold`` those at or above it."""
    path = Path(source)
    layers, heads, kv = _layout(model)
    if path.is_dir():
        tsv, config = path / TSV, path / CONFIG
        missing = [p.name for p in (tsv, config) if not p.is_file()]
        if missing:
            raise BadInputError(f"{path} is not a KV pattern folder: it lacks {', '.join(missing)} (a DuoAttention "
                                f"pattern or interp's --export kv-pattern has {TSV} and {CONFIG})")
        try:
            cfg, values = load_kv_pattern(path)
        except ValueError as exc:
            raise BadInputError(f"cannot read the KV pattern in {path}: {exc}") from exc
        if values.shape != (layers, kv):
            raise BadInputError(f"the KV pattern {tsv} has {values.shape[0]} rows x {values.shape[1]} columns but "
                                f"{model.name} has {layers} layers x {kv} kv heads: it is a pattern of another model")
        streaming = {k: int(cfg[f]) for k, f in (("sink", "sink_size"), ("window", "recent_size")) if f in cfg}
        return _choose(values, model, share, threshold, str(path)), streaming
    if not path.is_file():
        raise BadInputError(f"no KV pattern at {path}: give a folder with {TSV} and {CONFIG}, or a JSON file of "
                            '{"layer-head": scores}')
    try:
        raw = json.loads(path.read_text())
    except ValueError as exc:
        raise BadInputError(f"{path} is not JSON ({exc}); a Retrieval_Head/HeadKV pattern is "
                            '{"layer-head": [scores]}') from exc
    if not isinstance(raw, dict) or not raw:
        raise BadInputError(f'{path} must hold a JSON object {{"layer-head": [scores]}}, one entry per head')
    per_head = np.full((layers, heads), np.nan)
    for name, score in raw.items():
        try:
            la, h = (int(x) for x in str(name).split("-"))
            value = (float(np.mean(score)) if score else 0.0) if isinstance(score, list) else float(score)
        except (ValueError, TypeError) as exc:
            raise BadInputError(f'{path}: entry {name!r} is not "layer-head": score(s) ({exc})') from exc
        if not (0 <= la < layers and 0 <= h < heads):
            raise BadInputError(f"{path} has head {name} but {model.name} has {layers} layers x {heads} query heads: "
                                "it is a pattern of another model")
        per_head[la, h] = value  # Retrieval_Head writes [] for a head never scored: 0
    if np.isnan(per_head).any():
        la, h = (int(x) for x in np.argwhere(np.isnan(per_head))[0])
        raise BadInputError(f"{path} has no score for head {la}-{h} ({int(np.isnan(per_head).sum())} of "
                            f"{layers * heads} heads missing): it is a pattern of another model or a partial one")
    values = per_head.reshape(layers, kv, heads // kv).max(axis=2)
    return _choose(values, model, share, threshold, str(path)), {}
