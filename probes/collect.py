"""Collect activations for a labelled dataset at chosen sites and positions, in one pass per batch.

Only the chosen position (or the mean over the real tokens) of each site is kept as the forward
pass runs (a reducer on the trace), so memory is ``[examples, d]`` per site; with ``out=`` each
batch is also written to disk as a safetensors shard, for sets too large to hold.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.numpy import load_file, save_file
from tqdm.auto import tqdm

from interp.atomic import temp_sibling
from interp.errors import InterpError
from interp.model import Model

Position = Any  # "last" | "mean" | int | {"token": str}


@dataclass
class Activations:
    """``X[site]`` is ``[examples, d]``; ``labels`` one per example (or None)."""

    X: dict[str, np.ndarray]
    labels: np.ndarray | None = None

    @property
    def sites(self) -> list[str]:
        return list(self.X)

    @classmethod
    def load(cls, folder: str | Path) -> Activations:
        """Concatenate the shards that ``collect(..., out=folder)`` wrote."""
        shards = sorted(Path(folder).glob("batch-*.safetensors"))
        if not shards:
            raise InterpError(f"no activation shards (batch-*.safetensors) in {folder}")
        parts = [load_file(str(s)) for s in shards]
        labels = [p.pop("__labels__") for p in parts if "__labels__" in p]
        X = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        return cls(X, np.concatenate(labels) if labels else None)


def _indices(model: Model, ids: torch.Tensor, mask: torch.Tensor, position: Position) -> torch.Tensor | None:
    """Per example, the padded index to keep (None: mean over real tokens)."""
    if position == "mean":
        return None
    if position == "last":
        return torch.full((ids.shape[0],), ids.shape[1] - 1)
    if isinstance(position, int):
        lengths = mask.sum(1)
        if not -int(lengths.min()) <= position < int(lengths.min()):
            raise InterpError(f"position {position} is outside the shortest prompt ({int(lengths.min())} tokens)")
        start = ids.shape[1] - lengths  # left padding
        return start + position if position >= 0 else torch.full_like(start, ids.shape[1] + position)
    if isinstance(position, dict) and "token" in position:
        token_ids = model.tokenizer(position["token"], add_special_tokens=False)["input_ids"]
        if len(token_ids) != 1:
            raise InterpError(f"{position['token']!r} is not one token but {len(token_ids)}: {token_ids}")
        hits = (ids == token_ids[0]) & mask.bool()
        missing = (~hits.any(1)).nonzero(as_tuple=True)[0].tolist()
        if missing:
            raise InterpError(f"token {position['token']!r} does not occur in examples {missing[:5]}")
        return ids.shape[1] - 1 - hits.flip(1).long().argmax(1)  # its last occurrence
    raise InterpError(f"unknown position {position!r}; use 'last', 'mean', an int, or {{'token': str}}")


def collect(
    model: Model,
    texts: Sequence[str],
    labels: Sequence[Any] | None = None,
    *,
    sites: str | Sequence[str] = "blocks.*.hook_resid_post",
    position: Position = "last",
    batch_size: int = 8,
    out: str | Path | None = None,
    progress: bool = True,
) -> Activations:
    """Activations of ``texts`` at ``sites`` (names or globs) and ``position``.

    ``position``: ``"last"``, ``"mean"`` (over the real tokens), a token index, or
    ``{"token": " Paris"}`` (its last occurrence). ``out``: a folder to stream batches to as
    safetensors shards (numeric labels), read back with ``Activations.load``.

    >>> acts = collect(model, ["Paris is in France", "Rome is in Italy"], [1, 0])   # doctest: +SKIP
    >>> acts.X["blocks.5.hook_resid_post"].shape                                    # doctest: +SKIP
    (2, 576)
    """
    if labels is not None and len(labels) != len(texts):
        raise InterpError(f"{len(texts)} texts but {len(labels)} labels")
    names = [s.name for s in model.resolve(sites)]
    folder = Path(out) if out is not None else None
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
    kept: dict[str, list[np.ndarray]] = {n: [] for n in names}
    for b, start in enumerate(tqdm(range(0, len(texts), batch_size), desc="activations", disable=not progress)):
        tokens = model.to_tokens(list(texts[start : start + batch_size]))
        ids, mask = tokens["input_ids"].cpu(), tokens["attention_mask"].cpu()
        idx = _indices(model, ids, mask, position)

        def keep(x: torch.Tensor, idx=idx, mask=mask) -> np.ndarray:
            x = x.detach().float().cpu()
            if idx is None:
                m = mask[:, :, None].float()
                return ((x * m).sum(1) / m.sum(1)).numpy()
            return x[torch.arange(x.shape[0]), idx].numpy()

        with model.trace(tokens, reduce={n: keep for n in names}) as tr:
            pass
        batch = {n: tr[n] for n in names}
        for n, a in batch.items():
            if not np.isfinite(a).all():
                raise InterpError(f"activations at {n} contain NaN or inf (batch starting at example {start})")
            kept[n].append(a)
        if folder is not None:
            shard = dict(batch)
            if labels is not None:
                shard["__labels__"] = np.asarray(labels[start : start + batch_size])
            path = folder / f"batch-{b:06d}.safetensors"
            tmp = temp_sibling(path)
            save_file(shard, str(tmp))
            tmp.replace(path)  # a shard is either whole or absent
    X = {n: np.concatenate(v) for n, v in kept.items()}
    return Activations(X, None if labels is None else np.asarray(labels))
