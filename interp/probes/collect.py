"""Collect activations for a labelled dataset at chosen sites and positions, in one pass per batch.

Only the chosen position (or the mean over the real tokens) of each site is kept as the forward
pass runs (a reducer on the trace), so memory is ``[examples, d]`` per site. With ``out=`` the
set is streamed to disk instead, for sets too large to hold: each batch is written as a
safetensors shard as soon as it is complete (atomically: a shard is whole or absent), nothing
but the current batch is held, and ``activations.json`` is written last to mark the collection
complete. The result then reads its shards on demand, one site at a time.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.numpy import save as save_bytes

from interp import logs
from interp.core.model import Model
from interp.errors import InterpError, as_index, check_position
from interp.results.folders import check_output, output_folder
from interp.results.protocol import write_json
from interp.results.reading import activations_manifest

Position = Any  # "last" | "mean" | int | {"token": str}
MANIFEST = "activations.json"
SHARDS = "batch-*.safetensors"
LABELS = "__labels__"


class ShardedSites(Mapping[str, np.ndarray]):
    """``X[site]`` of a collection on disk: ``[examples, d]``, read from every shard when asked
    for (nothing is cached, so only the sites in use are in memory)."""

    def __init__(self, shards: Sequence[Path], sites: Sequence[str]):
        self.shards, self._sites = list(shards), list(sites)

    def __getitem__(self, site: str) -> np.ndarray:
        if site not in self._sites:
            raise KeyError(f"site {site!r} was not collected (collected: {', '.join(self._sites)})")
        parts = []
        for path in self.shards:
            with safe_open(str(path), framework="numpy") as f:
                parts.append(f.get_tensor(site))
        return np.concatenate(parts)

    def __iter__(self) -> Iterator[str]:
        return iter(self._sites)

    def __len__(self) -> int:
        return len(self._sites)

    def __repr__(self) -> str:
        return f"ShardedSites({len(self._sites)} sites in {len(self.shards)} shards)"


@dataclass
class Activations:
    """``X[site]`` is ``[examples, d]``; ``labels`` one per example (or None).

    From ``collect(..., out=folder)`` or ``Activations.load(folder)``, ``X`` reads the shards
    in ``folder`` on each access (``in_memory()`` reads them all once).
    """

    X: Mapping[str, np.ndarray]
    labels: np.ndarray | None = None
    folder: Path | None = None

    @property
    def sites(self) -> list[str]:
        return list(self.X)

    def in_memory(self) -> Activations:
        """The same activations as plain arrays."""
        return Activations({k: np.asarray(v) for k, v in self.X.items()}, self.labels)

    @classmethod
    def load(cls, folder: str | Path) -> Activations:
        """The shards that ``collect(..., out=folder)`` wrote, read on demand."""
        folder = Path(folder)
        manifest = folder / MANIFEST
        if not manifest.exists():
            if any(folder.glob(SHARDS)):
                raise InterpError(f"{folder} has activation shards but no {MANIFEST}: the collection did not "
                                  "finish (or is from an older version); run collect(..., out=) again")
            raise InterpError(f"no activations in {folder} (no {MANIFEST}); write them with collect(..., out=)")

        meta = activations_manifest(manifest)  # checked: site names, plain shard file names, counts
        shards = [folder / s["file"] for s in meta["shards"]]
        for s, path in zip(meta["shards"], shards, strict=True):
            if not path.exists():
                raise InterpError(f"activation shard {path} listed in {manifest} is missing")
            with safe_open(str(path), framework="numpy") as f:
                n = f.get_slice(meta["sites"][0]).get_shape()[0]
            if n != s["examples"]:
                raise InterpError(f"activation shard {path} has {n} examples, {manifest} says {s['examples']}")
        labels = None
        if meta["labels"]:
            parts = []
            for path in shards:
                with safe_open(str(path), framework="numpy") as f:
                    parts.append(f.get_tensor(LABELS))
            labels = np.concatenate(parts)
        return cls(ShardedSites(shards, meta["sites"]), labels, folder)


def _indices(model: Model, ids: torch.Tensor, mask: torch.Tensor, position: Position) -> torch.Tensor | None:
    """Per example, the padded index to keep (None: mean over real tokens)."""
    if position == "mean":
        return None
    if position == "last":
        return torch.full((ids.shape[0],), ids.shape[1] - 1)
    if as_index(position) is not None:
        shortest = int(mask.sum(1).min())
        position = check_position(position, shortest, hint=f"the shortest prompt has {shortest} tokens")
        lengths = mask.sum(1)
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


def _batches(model: Model, texts: Sequence[str], names: list[str], position: Position, batch_size: int,
             progress: bool) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
    """``(first example, {site: [batch, d]})`` per batch, checked to be finite."""
    for start in logs.progress(range(0, len(texts), batch_size), "activations", progress):
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
        batch = {n: np.ascontiguousarray(tr[n]) for n in names}
        for n, a in batch.items():
            if not np.isfinite(a).all():
                raise InterpError(f"activations at {n} contain NaN or inf (batch starting at example {start})")
        yield start, batch
        del batch, tr  # the consumer has written it; do not hold it through the next forward


def collect(
    model: Model,
    texts: Sequence[str],
    labels: Sequence[Any] | None = None,
    *,
    sites: str | Sequence[str] = "blocks.*.hook_resid_post",
    position: Position = "last",
    batch_size: int = 8,
    out: str | Path | None = None,
    force: bool = False,
    progress: bool = True,
) -> Activations:
    """Activations of ``texts`` at ``sites`` (names or globs) and ``position``.

    ``position``: ``"last"``, ``"mean"`` (over the real tokens), a token index, or
    ``{"token": " Paris"}`` (its last occurrence). ``out``: a folder to stream batches to as
    safetensors shards ``batch-000000.safetensors``... (labels must then be numbers), replacing
    a previous collection there; only one batch is held in memory at a time, the shards land in
    ``out`` together when the collection is complete, and the result reads them on demand (as
    ``Activations.load(out)`` does later). ``out`` follows ``interp.results.folders``: an existing file
    or a folder holding files interp did not write is refused before any work (unless
    ``force``).

    Args:
        batch_size: texts per forward pass.
        progress: show a progress bar.

    Returns:
        An ``Activations`` (``acts.X[site]`` is ``[texts, d]``; ``acts.labels``).

    >>> acts = collect(model, ["Paris is in France", "Rome is in Italy"], [1, 0])   # doctest: +SKIP
    >>> acts.X["blocks.5.hook_resid_post"].shape                                    # doctest: +SKIP
    (2, 576)
    """
    if labels is not None and len(labels) != len(texts):
        raise InterpError(f"{len(texts)} texts but {len(labels)} labels")
    if len(texts) == 0:
        raise InterpError("no texts to collect activations for")
    if batch_size < 1:
        raise InterpError(f"batch_size must be at least 1, got {batch_size}")
    y = None if labels is None else np.asarray(labels)
    names = [s.name for s in model.resolve(sites)]
    if out is not None:
        check_output(out, force=force)
    batches = _batches(model, texts, names, position, batch_size, progress)
    if out is None:
        kept: dict[str, list[np.ndarray]] = {n: [] for n in names}
        for _, batch in batches:
            for n, a in batch.items():
                kept[n].append(a)
        return Activations({n: np.concatenate(v) for n, v in kept.items()}, y)

    if y is not None and y.dtype.kind not in "biuf":
        raise InterpError(f"with out=, labels must be numbers or booleans (they are stored in safetensors shards); "
                          f"got {y.dtype} labels such as {y[0]!r}")
    shards: list[dict[str, Any]] = []
    with output_folder(out, force=force, kind="activations") as dest:
        for b, (start, batch) in enumerate(batches):
            shard: dict[str, np.ndarray] = dict(batch)
            if y is not None:
                shard[LABELS] = np.ascontiguousarray(y[start : start + batch_size])
            name = f"batch-{b:06d}.safetensors"
            dest.write_bytes(name, save_bytes(shard))
            shards.append({"file": name, "examples": len(next(iter(batch.values())))})
            del shard, batch  # hold nothing of a written batch
        meta = {"sites": names, "examples": len(texts), "labels": y is not None, "position": position, "shards": shards}
        write_json(dest, MANIFEST, meta, end="")  # strict JSON, the one writer
    folder = dest.path
    return Activations(ShardedSites([folder / s["file"] for s in shards], names), y, folder)
