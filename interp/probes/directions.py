"""Directions in activation space: difference of means, principal components, rank-1 DAS."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from interp.errors import InterpError


def _unit(v: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(v)
    if n == 0:
        raise InterpError("the direction is zero: the two groups have the same mean")
    return v / n


def diff_of_means(X: np.ndarray, y: np.ndarray, positive=None) -> np.ndarray:
    """Unit vector from the mean of the other examples to the mean of the ``positive`` class.

    Args:
        X: examples ``[n, d]``.
        y: their labels ``[n]``.

    Returns:
        A unit vector ``[d]`` (numpy).
    """
    X, y = np.asarray(X, dtype=np.float64), np.asarray(y)
    classes = np.unique(y)
    if len(classes) != 2 and positive is None:
        raise InterpError(f"difference of means needs two classes or positive=; labels have {classes.tolist()}")
    positive = classes[-1] if positive is None else positive
    if not (y == positive).any() or (y == positive).all():
        raise InterpError(f"class {positive!r} must be some but not all of the labels")
    return _unit(X[y == positive].mean(0) - X[y != positive].mean(0))


def pca_directions(X: np.ndarray, k: int = 1) -> np.ndarray:
    """The top-``k`` principal directions of centred ``X``: ``[k, d]``.

    Returns:
        An array ``[k, d]`` of unit rows.
    """
    X = np.asarray(X, dtype=np.float64)
    _, _, vt = np.linalg.svd(X - X.mean(0), full_matrices=False)
    return vt[:k]


def interchange(base: torch.Tensor, source: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Replace the component of ``base`` along unit ``u`` by that of ``source`` (rank-1 interchange).

    Returns:
        The interchanged activations, shaped like ``base``.
    """
    return base + ((source - base) @ u)[..., None] * u


def fit_rank1_das(loss: Callable[[torch.Tensor], torch.Tensor], d: int, *, steps: int = 300, lr: float = 0.05,
                  seed: int = 0, init: torch.Tensor | None = None) -> torch.Tensor:
    """Distributed alignment search, rank 1: the unit direction ``u`` minimising ``loss(u)``.

    ``loss`` runs interchange interventions with ``u`` (e.g. ``interchange(h_base, h_source, u)``
    at a site) and returns the cross-entropy of the outcome the source should cause. ``u`` is
    kept on the unit sphere by normalising a free parameter, as an orthogonal rank-1 projection.

    Args:
        d: the width of the direction.
        steps: optimiser steps (Adam).
        lr: the learning rate.
        seed: seed of the random start.
        init: a start direction instead of a random one.
    """
    g = torch.Generator().manual_seed(seed)
    v = (init.clone().double() if init is not None else torch.randn(d, generator=g, dtype=torch.float64)).requires_grad_()
    opt = torch.optim.Adam([v], lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        value = loss(v / v.norm())
        value.backward()
        opt.step()
    return (v / v.norm()).detach()
