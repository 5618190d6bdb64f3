"""Linear probes per site (scikit-learn), with held-out scores and confidence intervals."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from interp.errors import InterpError, require


@dataclass
class ProbeResult:
    """A fitted probe: held-out ``score`` (accuracy, or R² for values) and its 95% interval.

    Attributes:
        kind: ``logistic`` or ``ridge``.
        ci_low: the lower end of its 95% interval.
        ci_high: the upper end.
        n_train: training examples.
        n_test: held-out examples.
        estimator: the fitted scikit-learn estimator.
    """

    kind: str  # "logistic" or "ridge"
    score: float
    ci_low: float
    ci_high: float
    n_train: int
    n_test: int
    estimator: Any

    @property
    def direction(self) -> np.ndarray:
        """The probe's weight vector, unit length (first class vs rest for several classes)."""
        w = np.atleast_2d(self.estimator.coef_)[0]
        return w / np.linalg.norm(w)


def _check(X: np.ndarray, y: np.ndarray) -> None:
    if X.ndim != 2 or len(X) != len(y):
        raise InterpError(f"X must be [examples, d] with one label per example; got {X.shape} and {len(y)} labels")
    if not np.isfinite(X).all():
        raise InterpError("activations contain NaN or inf; probes need finite values")


def wilson(correct: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval for a proportion."""
    if n == 0:
        return (float("nan"), float("nan"))
    p = correct / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    # The interval's ends are exactly 0 and 1 when every (or no) answer is right.
    return (0.0 if correct == 0 else centre - half, 1.0 if correct == n else centre + half)


def fit_probe(X: np.ndarray, y: np.ndarray, *, kind: str = "auto", test_size: float = 0.25, seed: int = 0,
              strength: float = 1.0) -> ProbeResult:
    """Fit a logistic-regression probe (classes) or ridge probe (values) and score it on held-out data.

    ``kind="auto"`` picks ridge for float labels with many distinct values, logistic otherwise.
    ``strength`` is the regularisation (``1/C`` for logistic, ``alpha`` for ridge).

    Args:
        test_size: the share held out.
        seed: seed of the split.

    Returns:
        A ``ProbeResult``.

    >>> import numpy as np
    >>> X = np.random.default_rng(0).normal(size=(200, 8)); y = (X[:, 0] > 0).astype(int)
    >>> fit_probe(X, y).score > 0.9
    True
    """
    require("sklearn", "linear probes", "pip install scikit-learn")
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.model_selection import train_test_split

    X, y = np.asarray(X, dtype=np.float64), np.asarray(y)
    _check(X, y)
    if kind == "auto":
        kind = "ridge" if y.dtype.kind == "f" and len(np.unique(y)) > 10 else "logistic"
    if kind == "logistic":
        classes, counts = np.unique(y, return_counts=True)
        if len(classes) < 2:
            raise InterpError(f"a classification probe needs at least two classes; the labels are all {classes[0].tolist()!r}")
        stratify = y if counts.min() >= 2 else None
        Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=test_size, random_state=seed, stratify=stratify)
        est = LogisticRegression(C=1.0 / strength, max_iter=2000).fit(Xtr, ytr)
        correct = int((est.predict(Xte) == yte).sum())
        lo, hi = wilson(correct, len(yte))
        return ProbeResult("logistic", correct / len(yte), lo, hi, len(ytr), len(yte), est)
    if kind == "ridge":
        Xtr, Xte, ytr, yte = train_test_split(X, y.astype(float), test_size=test_size, random_state=seed)
        est = Ridge(alpha=strength).fit(Xtr, ytr)
        pred = est.predict(Xte)
        r2 = _r2(yte, pred)
        rng = np.random.default_rng(seed)
        boots = [_r2(yte[i], pred[i]) for i in (rng.integers(0, len(yte), len(yte)) for _ in range(500))]
        return ProbeResult("ridge", r2, float(np.percentile(boots, 2.5)), float(np.percentile(boots, 97.5)),
                           len(ytr), len(yte), est)
    raise InterpError(f"unknown probe kind {kind!r}; use 'auto', 'logistic' or 'ridge'")


def _r2(y: np.ndarray, pred: np.ndarray) -> float:
    ss = float(((y - y.mean()) ** 2).sum())
    return 1.0 - float(((y - pred) ** 2).sum()) / ss if ss > 0 else float("nan")


def probe_by_site(acts, labels: np.ndarray | None = None, **kwargs: Any) -> pd.DataFrame:
    """``fit_probe`` at every site of an ``Activations``: one row per site, in model order.

    Args:
        acts: an ``Activations`` (from ``collect``).
        labels: labels (default: ``acts.labels``).

    Returns:
        A pandas DataFrame: ``site, layer, kind, score, ci_low, ci_high, ...`` (``score``: held-out accuracy, or R² for values).
    """
    labels = acts.labels if labels is None else np.asarray(labels)
    if labels is None:
        raise InterpError("no labels: pass labels= or collect activations with labels")
    rows = []
    for site, X in acts.X.items():
        r = fit_probe(X, labels, **kwargs)
        layer = int(site.split(".")[1]) if site.startswith("blocks.") else -1
        rows.append({"site": site, "layer": layer, "kind": r.kind, "score": r.score, "ci_low": r.ci_low,
                     "ci_high": r.ci_high, "n_test": r.n_test})
    return pd.DataFrame(rows)


def concept_depth_figure(table: pd.DataFrame, title: str = "probe accuracy by layer"):
    """Plotly line of held-out score by layer with its confidence band ("concept depth").

    Args:
        table: a ``probe_by_site`` table.
        title: the figure's title.

    Returns:
        A plotly Figure.
    """
    import plotly.graph_objects as go

    t = table.sort_values("layer")
    fig = go.Figure([
        go.Scatter(x=t["layer"], y=t["ci_high"], line={"width": 0}, showlegend=False, hoverinfo="skip"),
        go.Scatter(x=t["layer"], y=t["ci_low"], fill="tonexty", line={"width": 0}, name="95% interval"),
        go.Scatter(x=t["layer"], y=t["score"], mode="lines+markers", name="held-out score"),
    ])
    fig.update_layout(title=title, xaxis_title="layer", yaxis_title="score")
    return fig
