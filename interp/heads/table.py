"""``HeadScores``: every head's scores as a tidy table, with top-k, heatmaps and saving."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from interp.errors import BadInputError, UnknownNameError, real_number
from interp.heads.compression import sliding_windows
from interp.heads.report import write_report
from interp.results.folders import OutputFolder
from interp.results.reading import head_scores

COLUMNS = ["score", "layer", "head", "value"]


def _windows(windows: dict[int, int]) -> str:
    return "{" + ", ".join(f"{k}: {v}" for k, v in sorted(windows.items())) + "}" if windows else "none"


class HeadScores:
    """Scores per (score, layer, head) in ``.df``, plus the model, settings and causal checks.

    Args:
        df: the tidy table: ``score, layer, head, value`` (one row per score and head).
        n_layers: layers of the model.
        n_heads: query heads per layer.
        versions: the versions of interp and its dependencies that computed the scores.
        kv_heads: key/value heads per layer (for ``kv_pattern`` and ``keep_full``).
        sliding_windows: ``{layer: window}`` for sliding-window layers.

    >>> scores = interp.heads.scan(model, scores=["induction", "prev_token"])   # doctest: +SKIP
    >>> scores.top("induction", 5)                                              # doctest: +SKIP
    >>> scores.heatmap("induction").show()                                      # doctest: +SKIP
    """

    def __init__(self, df: pd.DataFrame, *, model: str, n_layers: int, n_heads: int,
                 settings: dict[str, Any] | None = None, checks: dict[str, Any] | None = None,
                 versions: dict[str, str] | None = None, kv_heads: int | None = None,
                 sliding_windows: dict[int, int] | None = None):
        self.df = df[COLUMNS].reset_index(drop=True)
        self.model, self.n_layers, self.n_heads = model, n_layers, n_heads
        self.settings, self.checks, self.versions = settings or {}, checks or {}, versions or {}
        # The model's kv heads and sliding-window layers, for KV-cache patterns (None: not recorded)
        self.kv_heads, self.sliding_windows = kv_heads, sliding_windows

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], **kwargs: Any) -> HeadScores:
        """From ``{score: [layers, heads] array}``."""
        rows = [
            (score, layer, head, float(v))
            for score, a in arrays.items()
            for (layer, head), v in np.ndenumerate(np.asarray(a))
        ]
        first = next(iter(arrays.values()))
        kwargs.setdefault("n_layers", first.shape[0])
        kwargs.setdefault("n_heads", first.shape[1])
        return cls(pd.DataFrame(rows, columns=COLUMNS), **kwargs)

    @property
    def scores(self) -> list[str]:
        return list(dict.fromkeys(self.df["score"]))

    def __len__(self) -> int:
        return len(self.df)

    def __repr__(self) -> str:
        return f"HeadScores({self.model!r}, {self.n_layers}x{self.n_heads} heads, scores={self.scores})"

    def _repr_html_(self) -> str:
        import html

        return f"<p>{html.escape(repr(self))}</p>" + self.wide().to_html(float_format=lambda x: f"{x:.3f}")

    def _check(self, score: str) -> None:
        if score not in self.scores:
            raise UnknownNameError("score", score, self.scores)

    def matrix(self, score: str) -> np.ndarray:
        """``[layers, heads]`` values of one score."""
        self._check(score)
        part = self.df[self.df["score"] == score]
        out = np.full((self.n_layers, self.n_heads), np.nan)
        out[part["layer"].to_numpy(), part["head"].to_numpy()] = part["value"].to_numpy()
        return out

    def wide(self) -> pd.DataFrame:
        """One row per head, one column per score."""
        wide = self.df.pivot_table(index=["layer", "head"], columns="score", values="value", sort=False)
        return wide.reindex(columns=self.scores)  # a score with no value at all (all NaN) stays a column

    def top(self, score: str, k: int = 10) -> pd.DataFrame:
        """The ``k`` heads with the highest ``score`` (missing values left out; ties by layer and head)."""
        self._check(score)
        part = self.df[self.df["score"] == score]
        return part.nlargest(k, "value")[["layer", "head", "value"]].reset_index(drop=True)

    def ranking(self, score: str) -> pd.DataFrame:
        """Every head, highest ``score`` first, a missing value ranked as -1 (below every score in
        0..1): ``layer``, ``head``, ``value``. Unlike :meth:`top`, ties come in the order NumPy's
        ``argsort`` gives them: the retrieval masking check draws its random heads from outside the
        top of this ranking, and the reports it wrote depend on that order."""
        flat = np.nan_to_num(self.matrix(score), nan=-1).ravel()
        order = np.argsort(-flat)
        layer, head = np.divmod(order, self.n_heads)
        return pd.DataFrame({"layer": layer, "head": head, "value": self.matrix(score).ravel()[order]})

    def heatmap(self, score: str):
        """A plotly layer × head heatmap of one score."""
        import html

        import plotly.graph_objects as go

        m = self.matrix(score)
        # plotly reads <b>, <a href=...> in titles as markup: names from a file are shown as text
        text = lambda s: html.escape(str(s), quote=False)  # noqa: E731
        fig = go.Figure(go.Heatmap(
            z=m, x=list(range(self.n_heads)), y=list(range(self.n_layers)), colorscale="Viridis",
            hovertemplate="layer %{y}, head %{x}: %{z:.3f}<extra></extra>", colorbar={"title": text(score)},
        ))
        fig.update_layout(
            title=f"{text(score)} — {text(self.model)}", xaxis_title="head", yaxis_title="layer",
            yaxis={"autorange": "reversed"}, width=160 + 28 * self.n_heads, height=140 + 16 * self.n_layers,
        )
        return fig

    def to_dict(self) -> dict[str, Any]:
        """The ``head_scores.json`` document: model, settings, versions, shape, every score's rows
        (a NaN value stays NaN here; the writer makes it null) and the causal checks."""
        return {
            "model": self.model,
            "settings": self.settings,
            "versions": self.versions,
            "shape": {"layers": self.n_layers, "heads": self.n_heads,
                      **({} if self.kv_heads is None else {"kv_heads": self.kv_heads}),
                      **({} if self.sliding_windows is None else
                         {"sliding_windows": {str(k): v for k, v in self.sliding_windows.items()}})},
            "scores": [
                {"score": s, "layer": int(layer), "head": int(h), "value": float(v)}
                for s, layer, h, v in self.df.itertuples(index=False)
            ],
            "checks": self.checks,
        }

    def figures(self) -> dict[str, Any]:
        """One heatmap per score: ``{score: figure}``."""
        return {score: self.heatmap(score) for score in self.scores}

    def save(self, folder: str | Path | OutputFolder, *, force: bool = False) -> Path:
        """Write ``head_scores.parquet``, ``head_scores.json`` and ``report.html`` into ``folder``.

        Files land only when all are written; files interp did not write are never touched,
        and a folder holding any is refused unless ``force=True`` (see ``interp.results.folders``)."""

        return write_report(self, folder, force=force)

    @classmethod
    def load(cls, folder: str | Path) -> HeadScores:
        """Read a saved report folder back (from its JSON; no pickle)."""

        data = head_scores(folder)  # checked first: types, indices within the shape (BadReportError)
        df = pd.DataFrame(data.pop("rows"), columns=COLUMNS)
        df["value"] = df["value"].astype(float)  # null (a NaN score) as NaN
        return cls(df, **data)

    # -- KV-cache patterns ------------------------------------------------------------------
    def _layout(self, model: Any) -> tuple[int, dict[int, int]]:
        if model is not None:

            if (model.cfg.n_layers, model.cfg.n_heads) != (self.n_layers, self.n_heads):
                raise BadInputError(f"{model.name} has {model.cfg.n_layers} layers x {model.cfg.n_heads} heads but these "
                                    f"scores are for {self.n_layers} x {self.n_heads} ({self.model})")
            kv, windows = model.cfg.n_kv_heads, sliding_windows(model)
            if self.kv_heads is not None and kv != self.kv_heads:
                raise BadInputError(f"{model.name} has {kv} kv heads per layer but these scores of {self.model} were "
                                    f"scanned with {self.kv_heads}: a kv pattern needs the scanned model's layout")
            if self.sliding_windows is not None and windows != self.sliding_windows:
                raise BadInputError(f"{model.name} has sliding-window layers {_windows(windows)} but these scores of "
                                    f"{self.model} were scanned with {_windows(self.sliding_windows)}: a kv pattern "
                                    "needs the scanned model's layout")
            return kv, windows
        if self.kv_heads is None or self.sliding_windows is None:
            raise BadInputError(f"these scores of {self.model} do not record its kv heads and sliding-window layers "
                                "(a report written before they were); pass model=")
        return self.kv_heads, self.sliding_windows

    def kv_pattern(self, score: str, *, model: Any = None, lowest: bool = False) -> pd.DataFrame:
        """``score`` per kv head: a ``[layers, kv_heads]`` table (index ``layer``, columns the kv
        heads). A kv head serves a group of query heads and needs its full cache if any of them
        does, so it takes the group's highest value (``lowest=True``: the lowest, for scores such
        as ``streaming`` where a low value means the head needs the full cache). Sliding-window
        layers are NaN: their window already bounds their cache. ``model``: where the kv
        layout comes from (default: the one the scan recorded)."""
        self._check(score)
        kv, windows = self._layout(model)
        m = self.matrix(score).reshape(self.n_layers, kv, self.n_heads // kv)
        if np.isnan(m).any():
            why = " (no needle test was recalled, see checks['retrieval_tests'])" if score == "retrieval" else ""
            raise BadInputError(f"the {score!r} score of {self.model} is missing for some heads{why}")
        out = m.min(axis=2) if lowest else m.max(axis=2)
        out[list(windows)] = np.nan
        df = pd.DataFrame(out, columns=pd.Index(range(kv), name="kv_head"))
        df.index.name = "layer"
        return df

    def keep_full(self, score: str, share: float, *, model: Any = None, lowest: bool = False) -> np.ndarray:
        """Which kv heads keep their full cache, bool ``[layers, kv_heads]``: the ``share`` (0..1)
        of the kv heads outside sliding-window layers that need it most by ``score`` (highest
        first; ``lowest=True``: lowest first), ties by layer and head. For ``compressed``.

        >>> keep = scores.keep_full("retrieval", 0.25, model=model)        # doctest: +SKIP
        """
        values = self.kv_pattern(score, model=model, lowest=lowest).to_numpy()
        return keep_top(-values if lowest else values, share)


def keep_top(values: np.ndarray, share: float) -> np.ndarray:
    """The bool ``[layers, kv_heads]`` pattern keeping the ``share`` (0..1) of kv heads with the
    highest ``values`` full (NaN: a sliding-window layer's head, never counted); ties by layer
    and head.

    Args:
        values: float ``[layers, kv_heads]`` from ``interp.heads.kv_selection`` (``masking_effect``, ``train_gates``) or a kv
            pattern (``HeadScores.kv_pattern``).
        share: the share of the counted kv heads to keep full.

    Returns:
        bool ``[layers, kv_heads]``, True where the kv head keeps its full cache.

    >>> keep_top(np.array([[0.1, 0.9], [np.nan, 0.5]]), 0.34)
    array([[False,  True],
           [False, False]])
    """
    values = np.asarray(values, dtype=float)
    if values.ndim != 2:
        raise BadInputError(f"values must be [layers, kv_heads], got shape {values.shape}")
    share = real_number(share, "share", 0, 1)
    free = np.argwhere(~np.isnan(values))
    chosen = free[np.argsort(-values[free[:, 0], free[:, 1]], kind="stable")[: int(round(share * len(free)))]]
    keep = np.zeros(values.shape, dtype=bool)
    keep[chosen[:, 0], chosen[:, 1]] = True
    return keep
