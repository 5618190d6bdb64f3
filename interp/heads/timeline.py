"""Head scores across training checkpoints: checkpoint folders ordered by step, the timeline
table (one row per step, layer, head and score) and its figure of scores against step.

``interp heads CKPT [CKPT ...] --out DIR`` on checkpoint folders (``run/checkpoint-*``) scans
each one into its own subfolder and writes ``timeline.parquet``, ``timeline.json`` and
``timeline.html`` beside them.

>>> checkpoint_step("runs/checkpoint-1500")
1500
>>> checkpoint_step("runs/final") is None
True
"""

from __future__ import annotations

import glob
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from interp.core.sites import head_label
from interp.errors import BadReportError, TimelineError, UnknownNameError, whole_number
from interp.heads.settings import NGRAM_ORDERS, OUTPUT_ORDER, RANDOM_SCORES
from interp.results.folders import OutputFolder, writing
from interp.results.protocol import figure_html, write_json, write_table
from interp.results.reading import TIMELINE_COLUMNS, TIMELINE_META, TIMELINE_TABLE, read_json, timeline
from interp.results.strict_json import finite

if TYPE_CHECKING:
    import plotly.graph_objects as go

    from interp.heads.table import HeadScores

FIGURE = "timeline.html"
TRAINER_STATE = "trainer_state.json"
# checkpoint-500, step_500, step500, ckpt-500, global_step500, iter-500, or a bare 500.
_STEP_NAME = re.compile(r"(?:^|[-_.])(?:checkpoint|ckpt|step|global[-_]?step|iter|iteration)[-_=]?(\d+)$|^(\d+)$",
                        re.IGNORECASE)
_GLOB_CHARS = re.compile(r"[*?\[]")


def _trainer_step(folder: Path) -> int | None:
    path = folder / TRAINER_STATE
    if not path.is_file():
        return None
    try:
        step = json.loads(path.read_text(encoding="utf-8")).get("global_step")
    except (OSError, UnicodeDecodeError, ValueError, AttributeError):
        raise TimelineError(f"{path} is not readable JSON with a global_step") from None
    return whole_number(step, 0, f"{path}: global_step", TimelineError)


def checkpoint_step(folder: str | Path) -> int | None:
    """A checkpoint folder's training step: ``global_step`` of its ``trainer_state.json`` (as the
    Hugging Face Trainer writes it), else the number its name ends with after ``checkpoint``,
    ``step``, ``ckpt``, ``global_step`` or ``iter`` (or a name that is only a number); None if neither."""
    folder = Path(folder)
    if folder.is_dir():
        step = _trainer_step(folder)
        if step is not None:
            return step
    match = _STEP_NAME.search(folder.name)
    return None if match is None else int(match.group(1) or match.group(2))


def expand_globs(specs: Iterable[str]) -> list[str]:
    """``specs`` with every glob pattern that is not itself a path replaced by its matches in
    sorted order (``run/checkpoint-*``); a pattern that matches nothing raises."""
    out: list[str] = []
    for spec in specs:
        if _GLOB_CHARS.search(spec) and not Path(spec).expanduser().exists():
            matches = sorted(glob.glob(str(Path(spec).expanduser())))
            if not matches:
                raise TimelineError(f"no file or folder matches {spec!r}")
            out += matches
        else:
            out.append(spec)
    return list(dict.fromkeys(out))


def checkpoint_steps(specs: Sequence[str], *, required: bool = False) -> list[tuple[int, str]] | None:
    """``[(step, spec), ...]`` ordered by step when every spec is a local folder with a step
    (see ``checkpoint_step``), else None; with ``required`` a spec without one raises instead.
    Two checkpoints at one step raise: the timeline would be ambiguous."""
    steps: list[tuple[int, str]] = []
    for spec in specs:
        path = Path(spec).expanduser()
        step = checkpoint_step(path) if path.is_dir() else None
        if step is None:
            if required:
                why = "is not a folder" if not path.is_dir() else f"has no {TRAINER_STATE} and no step in its name"
                raise TimelineError(f"{spec} {why}; a timeline needs checkpoint folders such as run/checkpoint-500 "
                                    f"or folders with a {TRAINER_STATE}")
            return None
        steps.append((step, spec))
    seen: dict[int, str] = {}
    for step, spec in steps:
        if step in seen:
            raise TimelineError(f"two checkpoints are at step {step}: {seen[step]} and {spec}")
        seen[step] = spec
    return sorted(steps)


def score_names(scores: Iterable[str]) -> list[str]:
    """The table names a scan's score choice produces (``ngram`` gives ``ngram1``..``ngram4``)."""
    out: list[str] = []
    for s in scores:
        out += [f"ngram{n}" for n in NGRAM_ORDERS] if s == "ngram" else [s]
    return [s for s in OUTPUT_ORDER if s in out]


def default_figure_scores(computed: Sequence[str]) -> list[str]:
    """The scores drawn against step when none are chosen: the repeated-token scores and
    retrieval where computed, else every score."""
    main = [s for s in computed if s in (*RANDOM_SCORES, "retrieval")]
    return main or list(computed)


def check_figure_scores(chosen: Sequence[str] | None, computed: Sequence[str]) -> list[str]:
    """``chosen`` checked against the scores the scan computes (its default when None)."""
    if not chosen:
        return default_figure_scores(computed)
    for s in chosen:
        if s not in computed:
            raise UnknownNameError("timeline score", s, computed,
                                   hint="the figure can draw only scores the scan computes (--scores)")
    return list(dict.fromkeys(chosen))


def timeline_table(reports: Iterable[tuple[int, HeadScores]]) -> pd.DataFrame:
    """One row per (step, layer, head, score), ordered by step, then score, layer and head."""
    parts = []
    for step, scores in reports:
        df = scores.df.copy()
        df.insert(0, "step", int(step))
        parts.append(df)
    if not parts:
        return pd.DataFrame({c: pd.Series(dtype="int64" if c in ("step", "layer", "head") else
                                          ("float64" if c == "value" else "object")) for c in TIMELINE_COLUMNS})
    table = pd.concat(parts, ignore_index=True)
    rank = {s: i for i, s in enumerate(dict.fromkeys(table["score"]))}
    table["_rank"] = table["score"].map(rank)
    table = table.sort_values(["step", "_rank", "layer", "head"], kind="stable").drop(columns="_rank")
    return table[TIMELINE_COLUMNS].astype({"step": "int64", "layer": "int64", "head": "int64", "value": "float64"}) \
        .reset_index(drop=True)


@dataclass
class Timeline:
    """Head scores of one training run at each checkpoint.

    ``df``: columns ``step, layer, head, score, value``. ``checkpoints``: per step, the report
    subfolder (relative to the timeline's folder) and the model name. ``figure_scores``: the
    scores ``figure()`` draws by default.
    """

    df: pd.DataFrame
    checkpoints: list[dict[str, Any]]
    figure_scores: list[str]
    settings: dict[str, Any]

    @classmethod
    def from_reports(cls, reports: Sequence[tuple[int, str, HeadScores]], *, figure_scores: Sequence[str] | None = None,
                     settings: dict[str, Any] | None = None) -> Timeline:
        """From ``[(step, subfolder, HeadScores), ...]`` (any order)."""
        ordered = sorted(reports, key=lambda r: r[0])
        df = timeline_table((step, scores) for step, _, scores in ordered)
        computed = list(dict.fromkeys(df["score"]))
        return cls(df=df, checkpoints=[{"step": int(step), "folder": folder, "model": scores.model,
                                        "layers": scores.n_layers, "heads": scores.n_heads}
                                       for step, folder, scores in ordered],
                   figure_scores=check_figure_scores(figure_scores, computed), settings=settings or {})

    @property
    def steps(self) -> list[int]:
        return [int(c["step"]) for c in self.checkpoints]

    @property
    def scores(self) -> list[str]:
        return list(dict.fromkeys(self.df["score"]))

    def folder_of(self, step: int) -> str:
        """The report subfolder of the checkpoint at ``step``."""
        for c in self.checkpoints:
            if int(c["step"]) == int(step):
                return str(c["folder"])
        raise UnknownNameError("step", step, self.steps)

    def head(self, score: str, layer: int, head: int) -> pd.DataFrame:
        """``step, value`` of one head's score across checkpoints."""
        part = self.df[(self.df["score"] == score) & (self.df["layer"] == layer) & (self.df["head"] == head)]
        return part[["step", "value"]].reset_index(drop=True)

    def top_heads(self, score: str, k: int = 6) -> list[tuple[int, int]]:
        """The ``k`` heads whose ``score`` peaks highest over the run."""
        if score not in self.scores:
            raise UnknownNameError("score", score, self.scores)
        part = self.df[self.df["score"] == score]
        peak = part.groupby(["layer", "head"])["value"].max().sort_values(ascending=False, kind="stable")
        return [(int(layer), int(h)) for layer, h in peak.index[:k]]

    def figure(self, scores: Sequence[str] | None = None, *, top: int = 6, step: int | None = None) -> go.Figure:
        """Each score against step: the ``top`` heads that peak highest and the maximum over all
        heads (dashed); ``step`` draws a vertical line there."""
        import plotly.graph_objects as go
        from plotly.subplots import make_subplots

        chosen = list(scores) if scores else self.figure_scores
        for s in chosen:
            if s not in self.scores:
                raise UnknownNameError("score", s, self.scores)
        fig = make_subplots(rows=len(chosen), cols=1, shared_xaxes=True, subplot_titles=chosen,
                            vertical_spacing=0.08 if len(chosen) > 1 else 0.0)
        palette = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf"]
        for row, score in enumerate(chosen, start=1):
            part = self.df[self.df["score"] == score]
            best = part.groupby("step")["value"].max()
            fig.add_trace(go.Scatter(x=best.index.tolist(), y=best.tolist(), name=f"{score}: max over heads",
                                     mode="lines", line={"color": "black", "dash": "dash"}, legendgroup=score,
                                     hovertemplate="step %{x}: %{y:.3f}<extra>max</extra>"), row=row, col=1)
            for i, (layer, h) in enumerate(self.top_heads(score, top)):
                one, label = self.head(score, layer, h), head_label(layer, h)
                fig.add_trace(go.Scatter(x=one["step"].tolist(), y=one["value"].tolist(), mode="lines+markers",
                                         name=f"{score}: {label}", legendgroup=score, marker={"size": 4},
                                         line={"color": palette[i % len(palette)]},
                                         hovertemplate=f"{label} step %{{x}}: %{{y:.3f}}<extra></extra>"),
                              row=row, col=1)
            fig.update_yaxes(title_text="score", row=row, col=1)
            if step is not None:
                fig.add_vline(x=step, line={"color": "#999", "width": 1}, row=row, col=1)  # type: ignore[arg-type]
        fig.update_xaxes(title_text="training step", row=len(chosen), col=1)
        fig.update_layout(title=f"Head scores against training step ({len(self.steps)} checkpoints)",
                          height=160 + 260 * len(chosen), width=900)
        return fig

    def figures(self) -> dict[str, Any]:
        """``{"timeline": the figure of each chosen score against step}``."""
        return {"timeline": self.figure()}

    def _meta(self) -> dict[str, Any]:
        """The ``timeline.json`` document: the table's columns, the checkpoints, the scores and settings."""
        return {"columns": TIMELINE_COLUMNS, "checkpoints": self.checkpoints, "scores": self.scores,
                "figure_scores": self.figure_scores, "settings": self.settings}

    def to_dict(self) -> dict[str, Any]:
        """``timeline.json``'s document and the table's rows (``rows``; the file keeps them in
        ``timeline.parquet``), NaN as None."""
        return finite({**self._meta(), "rows": self.df.to_dict("records")})

    def save(self, dest: str | Path | OutputFolder, *, force: bool = False) -> Path:
        """Write ``timeline.parquet``, ``timeline.json`` and ``timeline.html`` (self-contained) into
        ``dest``; returns the folder."""
        with writing(dest, force=force, kind="timeline") as out:
            write_table(out, TIMELINE_TABLE, self.df)
            write_json(out, TIMELINE_META, self._meta())
            out.write_text(FIGURE, figure_html(self.figure(), "timeline", include_plotlyjs="inline"))
        return out.path

    @classmethod
    def load(cls, folder: str | Path) -> Timeline:
        """Read ``timeline.json`` and ``timeline.parquet`` back; a damaged pair raises ``TimelineError``."""

        folder = Path(folder)
        try:
            df, meta = timeline(folder)  # checked: types, plain checkpoint folder names, distinct steps
        except BadReportError as exc:
            raise TimelineError(f"cannot read the timeline in {folder}: {exc}") from None
        return cls(df=df, checkpoints=meta["checkpoints"],
                   figure_scores=list(meta.get("figure_scores") or []) or default_figure_scores(
                       list(dict.fromkeys(df["score"]))),
                   settings=meta.get("settings") or {})


def find_timeline(report_folder: str | Path) -> Path | None:
    """The folder of the timeline a head-score report belongs to (its parent, when that holds
    ``timeline.json`` listing the report), else None."""
    folder = Path(report_folder)
    meta = folder.parent / TIMELINE_META
    if not meta.is_file():
        return None
    try:
        data = read_json(meta)  # the validating reader: strict JSON, bounded size
        listed = {str(c.get("folder")) for c in data.get("checkpoints", []) if isinstance(c, dict)}
    except (BadReportError, AttributeError):
        return None
    return folder.parent if folder.name in listed else None
