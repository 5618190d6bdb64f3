"""``HeadScores``: every head's scores as a tidy table, with top-k, heatmaps and saving."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from interp.errors import UnknownNameError
from interp.outputs import OutputFolder

COLUMNS = ["score", "layer", "head", "value"]


class HeadScores:
    """Scores per (score, layer, head) in ``.df``, plus the model, settings and causal checks.

    >>> scores = interp.heads.scan(model, scores=["induction", "prev_token"])   # doctest: +SKIP
    >>> scores.top("induction", 5)                                              # doctest: +SKIP
    >>> scores.heatmap("induction").show()                                      # doctest: +SKIP
    """

    def __init__(self, df: pd.DataFrame, *, model: str, n_layers: int, n_heads: int,
                 settings: dict[str, Any] | None = None, checks: dict[str, Any] | None = None,
                 versions: dict[str, str] | None = None):
        self.df = df[COLUMNS].reset_index(drop=True)
        self.model, self.n_layers, self.n_heads = model, n_layers, n_heads
        self.settings, self.checks, self.versions = settings or {}, checks or {}, versions or {}

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
        return f"<p>{self!r}</p>" + self.wide().to_html(float_format=lambda x: f"{x:.3f}")

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
        return self.df.pivot_table(index=["layer", "head"], columns="score", values="value", sort=False)[self.scores]

    def top(self, score: str, k: int = 10) -> pd.DataFrame:
        """The ``k`` heads with the highest ``score``."""
        self._check(score)
        part = self.df[self.df["score"] == score]
        return part.nlargest(k, "value")[["layer", "head", "value"]].reset_index(drop=True)

    def heatmap(self, score: str):
        """A plotly layer × head heatmap of one score."""
        import plotly.graph_objects as go

        m = self.matrix(score)
        fig = go.Figure(go.Heatmap(
            z=m, x=list(range(self.n_heads)), y=list(range(self.n_layers)), colorscale="Viridis",
            hovertemplate="layer %{y}, head %{x}: %{z:.3f}<extra></extra>", colorbar={"title": score},
        ))
        fig.update_layout(
            title=f"{score} — {self.model}", xaxis_title="head", yaxis_title="layer",
            yaxis={"autorange": "reversed"}, width=160 + 28 * self.n_heads, height=140 + 16 * self.n_layers,
        )
        return fig

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "settings": self.settings,
            "versions": self.versions,
            "shape": {"layers": self.n_layers, "heads": self.n_heads},
            "scores": [
                {"score": s, "layer": int(layer), "head": int(h), "value": float(v)}
                for s, layer, h, v in self.df.itertuples(index=False)
            ],
            "checks": self.checks,
        }

    to_dict = to_json  # the result protocol's name (interp.results.Result)

    def figures(self) -> dict[str, Any]:
        """One heatmap per score: ``{score: figure}``."""
        return {score: self.heatmap(score) for score in self.scores}

    def save(self, folder: str | Path | OutputFolder, *, force: bool = False) -> Path:
        """Write ``head_scores.parquet``, ``head_scores.json`` and ``report.html`` into ``folder``.

        Files land only when all are written; files interp did not write are never touched,
        and a folder holding any is refused unless ``force=True`` (see ``interp.outputs``)."""
        from interp.heads.report import write_report

        return write_report(self, folder, force=force)

    @classmethod
    def load(cls, folder: str | Path) -> HeadScores:
        """Read a saved report folder back (from its JSON; no pickle)."""
        from interp.results import read_json

        data = read_json(folder, "head_scores.json")
        df = pd.DataFrame(data["scores"], columns=COLUMNS)
        shape = data.get("shape") or {"layers": int(df["layer"].max()) + 1, "heads": int(df["head"].max()) + 1}
        return cls(df, model=data["model"], n_layers=shape["layers"], n_heads=shape["heads"],
                   settings=data.get("settings"), checks=data.get("checks"), versions=data.get("versions"))
