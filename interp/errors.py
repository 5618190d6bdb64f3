"""Errors that name the problem and what would be valid, and the checks that raise them.

Every error class interp raises on purpose is defined here; modules that document one
(``interp.models.loading.ModelFileError``, ``interp.heads.head_scan.SettingError``,
``interp.results.folders.OutputError``, ...) import it from here.
Every entry point checks its arguments with the helpers below (``whole_number``, ``check_index``,
``check_indices``, ``check_position``, ``check_text``, ``check_seed``), so a bad argument reads the
same wherever it is given.
"""

from __future__ import annotations

import math
import numbers
import operator
from collections.abc import Iterable
from typing import Any


class InterpError(Exception):
    """Base class of every error this toolkit raises on purpose."""


class UnknownNameError(InterpError, ValueError):
    """A name (model, site, score, ...) that is not one of the valid choices."""

    def __init__(self, kind: str, name: object, valid: Iterable[object], hint: str = "", *, plural: str | None = None):
        choices = ", ".join(str(v) for v in valid)
        message = f"unknown {kind} {name!r}; valid {plural or kind + 's'}: {choices}"
        super().__init__(message + (f". {hint}" if hint else ""))
        self.name, self.kind = name, kind


class OutOfRangeError(InterpError, IndexError):
    """A layer, head, neuron or position index outside the model."""

    def __init__(self, kind: str, index: object, size: int, *, plural: str | None = None, hint: str = ""):
        message = f"{kind} {index} is out of range: valid {plural or kind + 's'} are 0..{size - 1}"
        super().__init__(message + (f"; {hint}" if hint else ""))


class PromptTooLongError(InterpError, ValueError):
    """Input longer than the model's context window."""


class MissingDependencyError(InterpError, ImportError):
    """An optional package is needed for this feature."""

    def __init__(self, package: str, feature: str, install: str | None = None):
        install = install or f"pip install {package}"
        super().__init__(f"{feature} needs the optional package {package!r}; install it with: {install}")


class OfflineError(InterpError, OSError):
    """A model must come from a hub that cannot be reached."""


def require(module: str, feature: str, install: str | None = None):
    """Import an optional dependency or raise ``MissingDependencyError``."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependencyError(module.split(".")[0], feature, install) from exc


class BadInputError(InterpError, ValueError):
    """An argument of a type, shape or value the call cannot use (an empty prompt, a vector of
    the wrong width, a NaN); raised before any work starts."""


def whole_number(value: Any, low: int, what: str, error: type[InterpError] = BadInputError, *,
                 high: int | None = None) -> int:
    """``value`` as an int, or ``error`` unless it is an integer (not a bool) of at least ``low``
    (and at most ``high``, where given)."""
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or int(value) < low \
            or (high is not None and int(value) > high):
        valid = f"of at least {low}" if high is None else f"in {low}..{high}"
        raise error(f"{what} must be an integer {valid}, got {value!r}".lstrip())
    return int(value)


def real_number(value: Any, what: str, low: float | None = None, high: float | None = None) -> float:
    """``value`` as a float, or ``BadInputError`` unless it is a real number (an int, a float, a
    NumPy number or a 0-d real tensor; not a bool), finite, within ``low..high`` where given."""
    number: float | None = None
    if not _is_bool(value) and (isinstance(value, numbers.Real) or getattr(value, "ndim", None) == 0):
        try:
            number = None if getattr(value, "is_complex", lambda: False)() else float(value)
        except (TypeError, ValueError):
            number = None
    bounds = f" in {low:g}..{high:g}" if low is not None and high is not None else \
        f" of at least {low:g}" if low is not None else f" of at most {high:g}" if high is not None else ""
    if number is not None and not math.isfinite(number):
        raise BadInputError(f"{what} must be finite, got {number}".lstrip())
    if number is None or (low is not None and number < low) or (high is not None and number > high):
        raise BadInputError(f"{what} must be a number{bounds}, got {value!r}".lstrip())
    return number


SEED_MAX = 2**32 - 1  # what NumPy's and Python's generators take as a seed


def check_seed(value: Any) -> int:
    """``value`` as a seed (an integer in 0..``SEED_MAX``), or ``BadInputError`` before any work."""
    seed = whole_number(value, 0, "seed")
    if seed > SEED_MAX:
        raise BadInputError(f"seed must be an integer in 0..{SEED_MAX}, got {seed}")
    return seed


def check_text(text: str, what: str) -> str:
    """``text``, unless it holds a lone surrogate: no Unicode text, and what Python makes of bytes
    that are not UTF-8 in a command-line argument or a file name; then ``BadInputError`` naming it."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError as exc:
        at, char = exc.start, text[exc.start]
    shown = repr(text) if len(text) <= 60 else repr(text[:57]) + "..."
    if "\udc80" <= char <= "\udcff":  # an undecodable byte, kept as a surrogate (surrogateescape)
        raise BadInputError(f"{what} {shown} holds bytes that are not valid UTF-8 (byte 0x{ord(char) - 0xDC00:02x} "
                            f"at character {at}); it must be UTF-8 text")
    raise BadInputError(f"{what} {shown} holds a lone surrogate {char!r} at character {at}, which is not Unicode "
                        "text; it must be valid Unicode (decoding bytes with errors='replace' drops invalid ones)")


def _is_bool(value: Any) -> bool:
    return isinstance(value, bool) or str(getattr(value, "dtype", "")) in ("bool", "torch.bool")


def as_index(value: Any) -> int | None:
    """``value`` as an int if it is an integer (an int, a NumPy integer, a 0-d integer tensor), else
    None: a bool such as True and a float such as 6.0 are none."""
    try:
        return None if _is_bool(value) else operator.index(value)
    except TypeError:
        return None


def check_index(value: Any, size: int, kind: str, *, negative: bool = False, hint: str = "") -> int:
    """``value`` as an index of one of ``size`` things (a layer, a head; ``negative``: -1 is the
    last): ``BadInputError`` unless it is an integer (a float such as 6.0 or a bool such as True
    is none), ``OutOfRangeError`` outside ``0..size-1`` (``-size..size-1`` with ``negative``)."""
    index = as_index(value)
    if index is None:
        valid = f"0..{size - 1}" + (f" (or -{size}..-1, counting from the end)" if negative else "")
        raise BadInputError(f"{kind} must be an integer in {valid}, got {type(value).__name__} {value!r}"
                            + (f"; {hint}" if hint else ""))
    if not (-size if negative else 0) <= index < size:
        raise OutOfRangeError(kind, index, size, hint=hint)
    return index


def check_position(value: Any, n_pos: int, *, kind: str = "position", hint: str = "") -> int:
    """``value`` as a position of a sequence of ``n_pos`` (negative ones count from the end, as in
    Python), checked as :func:`check_index` checks it: the one position-range check of every entry
    point (traces, interventions, patching, metrics, probes)."""
    return check_index(value, n_pos, kind, negative=True, hint=hint)


def check_indices(value: Any, size: int, kind: str, *, negative: bool = False, hint: str = "") -> list[int]:
    """One index or a sequence of them (:func:`check_index` each), as a list; all ``size`` for None."""
    if value is None:
        return list(range(size))
    one = isinstance(value, (str, bytes)) or not isinstance(value, Iterable) or getattr(value, "ndim", 1) == 0
    return [check_index(v, size, kind, negative=negative, hint=hint) for v in ([value] if one else value)]


class BadReportError(InterpError, ValueError):
    """A saved result file (a report's JSON, parquet or safetensors) that is missing, damaged or
    crafted: a field of the wrong type, an index outside the recorded shape, a size too large to
    read. The message names the file, the field and what would be valid."""


class OutputError(InterpError, OSError):
    """An output path that cannot be written without harming what is there (``interp.results.folders``)."""


class UsageError(InterpError, RuntimeError):
    """Calls made in an order that cannot work (e.g. a knockout opened after the forward ran)."""


class SettingError(InterpError, ValueError):
    """A scan setting that cannot work (an empty list, a count below 1, a depth outside 0..1)."""


class TimelineError(InterpError, ValueError):
    """Checkpoint folders that cannot make a timeline (no step, two with one step, no match)."""


class CacheError(InterpError, OSError):
    """The model cache cannot be written: a read-only folder, no permission, a full disk."""


class ModelFileError(InterpError, ValueError):
    """A model file or folder that is damaged, incomplete or of an unsupported architecture."""


class LoadArgumentError(InterpError, TypeError):
    """Arguments of ``load`` that do not fit together, or a ``model=`` that is no supported causal LM."""


class DeviceUnavailableError(InterpError, ValueError):
    """A well-formed device that this machine does not have (e.g. ``cuda`` without a GPU)."""


class ReportError(BadReportError):
    """A report file the app cannot show: missing, unreadable or not in the expected shape."""
