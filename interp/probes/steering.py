"""Steering along a direction: set or add the projection of a site's value on a unit vector."""

from __future__ import annotations

from typing import Any

import torch

from interp.core.interventions import Intervention, check_finite
from interp.errors import BadInputError, real_number


def steer(direction: Any, *, value: float | None = None, add: float | None = None, positions: Any = -1) -> Intervention:
    """An intervention for a residual-stream site (``[batch, pos, d]``).

    ``value``: set the projection on ``direction`` to ``value`` (``h - u uᵀh + u·value``), as
    Minder et al. do; ``add``: move along it by ``add``. Only ``positions`` change (default the
    newest token, also at every step of ``generate``); the orthogonal complement never does.
    The direction must be a finite, non-zero vector; its width is checked against the site
    (and ``positions`` against the input) when a trace or ``generate`` installs it, before
    any forward pass. ``value`` and ``add`` must be finite.

    Returns:
        An ``Intervention`` for ``interventions={site: ...}``.

    >>> model.generate(prompt, interventions={"blocks.16.hook_resid_post": steer(u, value=6.0)})  # doctest: +SKIP
    """
    if (value is None) == (add is None):
        raise BadInputError("steer: give exactly one of value= (set the projection) or add= (shift along the direction)")
    for name, number in (("value", value), ("add", add)):
        if number is not None:
            real_number(number, f"steer: {name}=")
    u = unit_direction(direction, "steer")

    def op(x: torch.Tensor, site: str) -> torch.Tensor:
        uu = u.to(x.device, torch.float64)
        h = x.double()
        if value is not None:
            shift = float(value) - h @ uu
        else:
            shift = torch.full(h.shape[:-1], float(add or 0.0), dtype=h.dtype, device=h.device)
        return (h + shift[..., None] * uu).to(x.dtype)

    return Intervention(op, positions=positions, label="steer", value=u, value_name="direction")


def unit_direction(direction: Any, what: str) -> torch.Tensor:
    """A direction as a float64 unit vector; not a finite, non-zero vector: a clear error."""
    try:
        u = torch.as_tensor(direction, dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError):
        raise BadInputError(f"{what}: direction must be a vector (tensor, array or list of numbers), got "
                            f"{type(direction).__name__}") from None
    if u.ndim != 1 or u.numel() == 0:
        raise BadInputError(f"{what}: direction must be a vector [d], got shape {tuple(u.shape)}")
    check_finite(u, f"{what}: direction")
    norm = u.norm()
    if not float(norm) > 0:
        raise BadInputError(f"{what}: direction is the zero vector, which has no direction")
    return u / norm


def projection(x: torch.Tensor, direction: Any) -> torch.Tensor:
    """``uᵀx`` along the last axis, for a unit ``u`` (the knob's reading).

    Args:
        x: activations ``[..., d]``.
        direction: a vector ``[d]`` (normalised here).

    Returns:
        The projections, shaped like ``x`` without its last axis.
    """
    u = unit_direction(direction, "projection").to(x.device)
    if x.shape[-1] != u.shape[0]:
        raise BadInputError(f"projection: direction has {u.shape[0]} elements but the values have {x.shape[-1]} in "
                            "their last dimension")
    return x.double() @ u
