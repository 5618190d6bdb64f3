"""Interventions: functions applied to a site's value as it passes, during a forward or ``generate``.

Each takes the value in the site's layout (see ``interp.core.sites``) and returns the new value. A
selection restricts the change to some positions (axis 1, indices of the tensor passing by;
``-1`` is the newest token, also at every step of ``generate``), heads (axis 2 of head
sites; kv heads for ``hook_k``/``hook_v``) and units (last axis: neurons of ``mlp.hook_post``,
dimensions of the residual stream).

>>> import torch
>>> from interp.core import interventions as iv
>>> x = torch.ones(1, 3, 2, 4)                      # [batch, pos, heads, d_head]
>>> iv.zero(heads=[1], positions=[-1])(x, "blocks.0.attn.hook_z")[0, :, 1, 0].tolist()
[1.0, 1.0, 0.0]
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from interp.errors import BadInputError, OutOfRangeError, as_index, check_index

Index = int | Sequence[int] | slice | None
# The axes after [batch, pos] of a site, with their names: [("d_model", 64)] or [("n_heads", 4), ("d_head", 16)].
Dims = Sequence[tuple[str, int]]

_AXES = {"positions": "position", "heads": "head", "units": "unit"}


def check_finite(value: Any, what: str) -> None:
    """Raise ``BadInputError`` if a number or tensor holds NaN or an infinity (``what`` names the argument)."""
    if value is None or callable(value) or hasattr(value, "steps"):
        return
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if not math.isfinite(value):
            raise BadInputError(f"{what} must be finite, got {value}")
        return
    try:
        t = torch.as_tensor(value)
    except (TypeError, ValueError, RuntimeError):
        raise BadInputError(f"{what} must be a number or a tensor, got {type(value).__name__} {value!r}") from None
    if not (t.is_floating_point() or t.is_complex()):
        return
    bad = ~torch.isfinite(t)
    if bool(bad.any()):
        if t.ndim == 0:
            raise BadInputError(f"{what} must be finite, got {t.item()}")
        first = tuple(int(i) for i in bad.nonzero()[0])
        raise BadInputError(f"{what} must be finite, got a tensor with {int(bad.sum())} non-finite "
                            f"entr{'y' if int(bad.sum()) == 1 else 'ies'} (first: {t[first].item()} at index {first})")


def _index_items(index: Any) -> list[int] | None:
    """The integer indices of a selection (None for a slice, a boolean mask or no selection)."""
    if index is None or isinstance(index, slice):
        return None
    if hasattr(index, "__array__") and not isinstance(index, torch.Tensor):
        index = torch.as_tensor(index)
    if isinstance(index, torch.Tensor):
        return None if index.dtype == torch.bool else [int(i) for i in index.reshape(-1).tolist()]
    if isinstance(index, int):
        return [index]
    return [operator.index(i) for i in index]


def _check_selection(index: Any, name: str, label: str) -> None:
    """A selection must be an int, a sequence of ints, a slice or an integer/boolean tensor."""
    if index is None or isinstance(index, slice):
        if isinstance(index, slice) and not all(v is None or as_index(v) is not None
                                                for v in (index.start, index.stop, index.step)):
            raise BadInputError(f"{label}: {name}= slice must have int bounds, got {index!r}")
        return
    ok = False
    if hasattr(index, "__array__") and not isinstance(index, torch.Tensor):
        try:
            index = torch.as_tensor(index)
        except (TypeError, ValueError, RuntimeError):
            pass
    if isinstance(index, torch.Tensor):
        ok = index.ndim <= 1 and (index.dtype == torch.bool or not (index.is_floating_point() or index.is_complex()))
    elif isinstance(index, int):
        ok = as_index(index) is not None  # a bool is no index
    elif isinstance(index, Sequence) and not isinstance(index, (str, bytes)):
        ok = all(as_index(i) is not None for i in index)
    if not ok:
        raise BadInputError(f"{label}: {name}= must be an int, a list of ints or a slice, got {index!r}")


def _mask(shape: torch.Size, axis: int, index: Index, device: torch.device, name: str = "",
          site: str = "", label: str = "") -> torch.Tensor | None:
    if index is None:
        return None
    size = shape[axis]
    keep = torch.zeros(size, dtype=torch.bool, device=device)
    items = _index_items(index)
    for i in items or ():
        check_index(i, size, _AXES.get(name, "index"), negative=True,
                    hint=f"{label} at {site}: {name}= selects on an axis of size {size} in this forward call "
                         "(negative indices count from the end)")
    idx = [index] if isinstance(index, int) else index
    try:
        keep[idx] = True
    except IndexError:
        raise OutOfRangeError(_AXES.get(name, "index"), index, size,
                              hint=f"{label} at {site}: {name}= selects on an axis of size {size}") from None
    view = [1] * len(shape)
    view[axis] = size
    return keep.view(view)


def _layout(dims: Dims) -> str:
    return ", ".join(["batch", "pos", *(f"{n}={s}" for n, s in dims)])


def _fits(shape: Sequence[int], dims: Dims, label: str, site: str, what: str, exact: bool = False) -> None:
    """A value broadcasts to ``[batch, pos, *dims]`` (``exact``: it is ``[batch, pos, *dims]``)."""
    shape = tuple(int(s) for s in shape)
    if exact and len(shape) != 2 + len(dims):
        raise BadInputError(f"{label} at {site}: {what} has shape {shape} but the site holds [{_layout(dims)}]")
    if len(shape) > 2 + len(dims):
        raise BadInputError(f"{label} at {site}: {what} has {len(shape)} dimensions {shape} but the site holds "
                            f"[{_layout(dims)}]")
    for k, (name, size) in enumerate(reversed(dims), start=1):
        if k > len(shape):
            break
        got = shape[-k]
        if got == size or (got == 1 and not exact):
            continue
        if k == 1:
            raise BadInputError(f"{label} at {site}: {what} has {got} elements in its last dimension but the site has "
                                f"{size} ({name})")
        raise BadInputError(f"{label} at {site}: {what} of shape {shape} does not fit the site's [{_layout(dims)}]: "
                            f"its dimension {-k} has {got} elements but the site's {name} axis has {size}")


@dataclass(frozen=True)
class Intervention:
    """``op(value, site) -> new value``, applied only where the selection says.

    ``value`` (a number or tensor the op broadcasts against the site, e.g. the vector ``add``
    adds) and ``source`` (what ``patch`` copies from) let a trace check the intervention
    against the site before any forward pass; ``value_name`` names ``value`` in messages.
    """

    op: Callable[[torch.Tensor, str], torch.Tensor]
    positions: Index = None
    heads: Index = None
    units: Index = None
    label: str = "custom"
    value: Any = None
    source: Any = None
    value_name: str = "value"

    def __post_init__(self) -> None:
        for name in ("positions", "heads", "units"):
            _check_selection(getattr(self, name), name, self.label)

    def check(self, site: str, dims: Dims, n_pos: int | None = None, note: str = "") -> None:
        """Raise a clear error, before any run, if this intervention cannot apply at ``site``.

        ``dims`` are the site's axes after ``[batch, pos]`` with their names; ``n_pos`` the
        number of positions the run passes (None: not known yet).
        """
        if self.heads is not None and len(dims) < 2:
            raise BadInputError(f"{self.label} at {site}: heads= needs a per-head site (hook_q/k/v/z/result), "
                                f"not {site!r}")
        axes: list[tuple[str, Index, str, int, str]] = []
        if self.heads is not None:
            name, size = dims[0]
            axes.append(("heads", self.heads, "kv head" if "kv" in name else "head", size, f"the site's {name} axis"))
        if self.units is not None:
            name, size = dims[-1]
            axes.append(("units", self.units, "unit", size, f"the site's last axis ({name})"))
        if self.positions is not None and n_pos is not None:
            tokens = f"{n_pos} token{'s' if n_pos != 1 else ''}"
            axes.append(("positions", self.positions, "position", n_pos,
                         f"the position axis ({tokens}; negative positions count from the end){note}"))
        for arg, index, kind, size, axis in axes:
            if isinstance(index, torch.Tensor) and index.dtype == torch.bool:
                if index.numel() != size:
                    raise BadInputError(f"{self.label} at {site}: {arg}= is a boolean mask of {index.numel()} "
                                        f"entries but {axis} has {size}")
                continue
            for i in _index_items(index) or ():
                check_index(i, size, kind, negative=True, hint=f"{self.label} at {site}: {arg}= selects on {axis}")
        if self.value is not None and not isinstance(self.value, (int, float)):
            _fits(torch.as_tensor(self.value).shape, dims, self.label, site, self.value_name)
        if self.source is not None:
            src = self.source
            if hasattr(src, "steps"):
                if site not in src:
                    have = ", ".join(src.keys()) or "nothing"
                    raise BadInputError(f"{self.label} at {site}: the source trace did not capture {site} (it captured "
                                        f"{have}); capture it in the source run with sites=")
                src = src[site]
            if isinstance(src, torch.Tensor):
                _fits(src.shape, dims, self.label, site, "the source", exact=True)

    def __call__(self, x: torch.Tensor, site: str) -> torch.Tensor:
        if self.heads is not None and x.ndim < 4:
            raise BadInputError(f"{self.label} at {site}: heads= needs a per-head site (hook_q/k/v/z/result), "
                                f"not {site!r}")
        new = self.op(x, site)
        if new.shape != x.shape:
            try:
                fits = torch.broadcast_shapes(new.shape, x.shape) == x.shape
            except RuntimeError:
                fits = False
            if not fits:
                raise BadInputError(f"{self.label} at {site}: {self.value_name} of shape {tuple(new.shape)} does not "
                                    f"fit the value passing the site, of shape {tuple(x.shape)}")
        new = new.to(x.dtype)
        masks = [
            _mask(x.shape, 1, self.positions, x.device, "positions", site, self.label),
            _mask(x.shape, 2, self.heads, x.device, "heads", site, self.label) if self.heads is not None else None,
            _mask(x.shape, x.ndim - 1, self.units, x.device, "units", site, self.label),
        ]
        selected: torch.Tensor | None = None
        for m in masks:
            if m is not None:
                selected = m if selected is None else selected & m
        if selected is None:
            return new.expand_as(x) if new.shape != x.shape else new
        return torch.where(selected, new, x)


def _value(v: Any, like: torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(v, dtype=like.dtype, device=like.device)


def _number_or_tensor(value: Any, what: str) -> Any:
    """A value given to an intervention: a real number or a numeric tensor (array, list), finite."""
    if isinstance(value, bool) or value is None or isinstance(value, (str, bytes)):
        raise BadInputError(f"{what} must be a number or a tensor, got {value!r}")
    if not isinstance(value, (int, float)):
        try:
            t = torch.as_tensor(value)
        except (TypeError, ValueError, RuntimeError):
            raise BadInputError(f"{what} must be a number or a tensor, got {type(value).__name__}") from None
        if t.dtype == torch.bool or t.is_complex():
            raise BadInputError(f"{what} must hold real numbers, got a {t.dtype} tensor")
    check_finite(value, what)
    return value


def set_value(value: Any, **selection: Any) -> Intervention:
    """Hold the selection at ``value`` (a number or a tensor broadcastable to the site)."""
    value = _number_or_tensor(value, "set_value: value")
    return Intervention(lambda x, _: _value(value, x), label="set_value", value=value, **selection)


def add(value: Any, **selection: Any) -> Intervention:
    """Add ``value`` (e.g. a steering vector of size d_model)."""
    value = _number_or_tensor(value, "add: value")
    return Intervention(lambda x, _: x + _value(value, x), label="add", value=value, **selection)


def scale(factor: Any, **selection: Any) -> Intervention:
    """Multiply by ``factor`` (a number, or a tensor broadcastable to the site)."""
    factor = _number_or_tensor(factor, "scale: factor")
    return Intervention(lambda x, _: x * _value(factor, x), label="scale", value=factor, value_name="factor",
                        **selection)


def zero(**selection: Any) -> Intervention:
    """Zero-ablate."""
    return Intervention(lambda x, _: torch.zeros_like(x), label="zero", **selection)


def mean_ablate(mean: Any, **selection: Any) -> Intervention:
    """Replace by a mean activation, e.g. ``trace[site].mean(dim=(0, 1))`` over a reference set."""
    mean = _number_or_tensor(mean, "mean_ablate: mean")
    return Intervention(lambda x, _: _value(mean, x), label="mean_ablate", value=mean, value_name="mean",
                        **selection)


def patch(source: Any, **selection: Any) -> Intervention:
    """Take the value the same site had in another run (a ``Trace`` that captured it, or a tensor)."""
    if not (hasattr(source, "steps") or isinstance(source, torch.Tensor)):
        raise BadInputError(f"patch: source must be a Trace that captured the site or a tensor, "
                            f"got {type(source).__name__}")

    def op(x: torch.Tensor, site: str) -> torch.Tensor:
        value = source[site] if hasattr(source, "steps") else source
        if value.shape != x.shape:
            raise BadInputError(f"patch at {site}: the source has shape {tuple(value.shape)} but the run has "
                                f"{tuple(x.shape)}; patch from a run of the same batch and length")
        return value.to(x.device)

    return Intervention(op, label="patch", source=source, **selection)
