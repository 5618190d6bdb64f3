"""Interventions: functions applied to a site's value as it passes, during a forward or ``generate``.

Each takes the value in the site's layout (see ``interp.sites``) and returns the new value. A
selection restricts the change to some positions (axis 1, indices of the tensor passing by;
``-1`` is the newest token, also at every step of ``generate``), heads (axis 2 of head
sites; kv heads for ``hook_k``/``hook_v``) and units (last axis: neurons of ``mlp.hook_post``,
dimensions of the residual stream).

>>> import torch
>>> from interp import interventions as iv
>>> x = torch.ones(1, 3, 2, 4)                      # [batch, pos, heads, d_head]
>>> iv.zero(heads=[1], positions=[-1])(x, "blocks.0.attn.hook_z")[0, :, 1, 0].tolist()
[1.0, 1.0, 0.0]
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

Index = int | Sequence[int] | slice | None


def _mask(shape: torch.Size, axis: int, index: Index, device: torch.device) -> torch.Tensor | None:
    if index is None:
        return None
    size = shape[axis]
    keep = torch.zeros(size, dtype=torch.bool, device=device)
    idx = [index] if isinstance(index, int) else index
    try:
        keep[idx] = True
    except IndexError:
        raise IndexError(f"selection {index!r} is out of range for an axis of size {size}") from None
    view = [1] * len(shape)
    view[axis] = size
    return keep.view(view)


@dataclass(frozen=True)
class Intervention:
    """``op(value, site) -> new value``, applied only where the selection says."""

    op: Callable[[torch.Tensor, str], torch.Tensor]
    positions: Index = None
    heads: Index = None
    units: Index = None
    label: str = "custom"

    def __call__(self, x: torch.Tensor, site: str) -> torch.Tensor:
        new = self.op(x, site).to(x.dtype)
        masks = [
            _mask(x.shape, 1, self.positions, x.device),
            _mask(x.shape, 2, self.heads, x.device) if self.heads is not None else None,
            _mask(x.shape, x.ndim - 1, self.units, x.device),
        ]
        if self.heads is not None and x.ndim < 4:
            raise ValueError(f"heads= needs a per-head site (hook_q/k/v/z/result), not {site!r}")
        selected: torch.Tensor | None = None
        for m in masks:
            if m is not None:
                selected = m if selected is None else selected & m
        if selected is None:
            return new.expand_as(x) if new.shape != x.shape else new
        return torch.where(selected, new, x)


def _value(v: Any, like: torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(v, dtype=like.dtype, device=like.device)


def set_value(value: Any, **selection: Any) -> Intervention:
    """Hold the selection at ``value`` (a number or a tensor broadcastable to the site)."""
    return Intervention(lambda x, _: _value(value, x).expand_as(x), label="set", **selection)


def add(value: Any, **selection: Any) -> Intervention:
    """Add ``value`` (e.g. a steering vector of size d_model)."""
    return Intervention(lambda x, _: x + _value(value, x), label="add", **selection)


def scale(factor: float, **selection: Any) -> Intervention:
    """Multiply by ``factor``."""
    return Intervention(lambda x, _: x * factor, label="scale", **selection)


def zero(**selection: Any) -> Intervention:
    """Zero-ablate."""
    return Intervention(lambda x, _: torch.zeros_like(x), label="zero", **selection)


def mean_ablate(mean: torch.Tensor, **selection: Any) -> Intervention:
    """Replace by a mean activation, e.g. ``trace[site].mean(dim=(0, 1))`` over a reference set."""
    return Intervention(lambda x, _: _value(mean, x).expand_as(x), label="mean", **selection)


def patch(source: Any, **selection: Any) -> Intervention:
    """Take the value the same site had in another run (a ``Trace`` that captured it, or a tensor)."""

    def op(x: torch.Tensor, site: str) -> torch.Tensor:
        value = source[site] if hasattr(source, "steps") else source
        if value.shape != x.shape:
            raise ValueError(f"cannot patch {site}: source has shape {tuple(value.shape)}, run has {tuple(x.shape)}")
        return value.to(x.device)

    return Intervention(op, label="patch", **selection)
