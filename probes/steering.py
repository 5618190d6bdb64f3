"""Steering along a direction: set or add the projection of a site's value on a unit vector."""

from __future__ import annotations

from typing import Any

import torch

from interp.interventions import Intervention


def steer(direction: Any, *, value: float | None = None, add: float | None = None, positions: Any = -1) -> Intervention:
    """An intervention for a residual-stream site (``[batch, pos, d]``).

    ``value``: set the projection on ``direction`` to ``value`` (``h - u uᵀh + u·value``), as
    Minder et al. do; ``add``: move along it by ``add``. Only ``positions`` change (default the
    newest token, also at every step of ``generate``); the orthogonal complement never does.

    >>> model.generate(prompt, interventions={"blocks.16.hook_resid_post": steer(u, value=6.0)})  # doctest: +SKIP
    """
    if (value is None) == (add is None):
        raise ValueError("give exactly one of value= (set the projection) or add= (shift along the direction)")
    u = torch.as_tensor(direction, dtype=torch.float64)
    u = u / u.norm()

    def op(x: torch.Tensor, site: str) -> torch.Tensor:
        uu = u.to(x.device, torch.float64)
        h = x.double()
        if value is not None:
            shift = value - h @ uu
        else:
            shift = torch.full(h.shape[:-1], float(add or 0.0), dtype=h.dtype, device=h.device)
        return (h + shift[..., None] * uu).to(x.dtype)

    return Intervention(op, positions=positions, label="steer")


def projection(x: torch.Tensor, direction: Any) -> torch.Tensor:
    """``uᵀx`` along the last axis, for a unit ``u`` (the knob's reading)."""
    u = torch.as_tensor(direction, dtype=torch.float64).to(x.device)
    return x.double() @ (u / u.norm())
