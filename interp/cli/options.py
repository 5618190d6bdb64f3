"""Options shared by the subcommands, defined once: their names, meanings, checks and help.

One meaning per name across subcommands: ``--layer`` is one layer and ``--layers`` a list;
``--max-new-tokens`` counts generated tokens; ``--top-tokens`` counts decoded tokens per
neuron; every list is comma-separated. Values are checked as they are parsed, so a bad one
ends the command with ``interp SUBCOMMAND: error: argument --X: ...`` before any work.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

DEVICE_HELP = "where the model runs: cpu (default), cuda, cuda:N or mps"


def default(owner: Any, name: str) -> Any:
    """The default of parameter ``name`` of the function ``owner`` (or of the field ``name`` of
    the dataclass ``owner``, or the entry of the dict ``owner``), as a command-line string: a
    default is written once, where the Python API declares it, and the CLI reads it there.

    >>> def f(x, *, lengths=(25, 50), k=8): ...
    >>> default(f, "lengths"), default(f, "k")
    ('25,50', 8)
    """
    if isinstance(owner, dict):
        value = owner[name]
    elif dataclasses.is_dataclass(owner):
        spec = {f.name: f for f in dataclasses.fields(owner)}[name]
        value = spec.default_factory() if spec.default is dataclasses.MISSING else spec.default  # type: ignore[misc,operator]
    else:
        value = inspect.signature(owner).parameters[name].default
        if value is inspect.Parameter.empty:
            raise TypeError(f"{owner.__name__}() has no default for {name}")
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return value


def at_least(low: int) -> Callable[[str], int]:
    """An integer of at least ``low``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
        return value

    parse.__name__ = f"integer >= {low}"
    return parse


def int_list(low: int = 0) -> Callable[[str], list[int]]:
    """A comma-separated list of integers, each at least ``low``, at least one."""
    one = at_least(low)

    def parse(text: str) -> list[int]:
        items = [x.strip() for x in text.split(",") if x.strip()]
        if not items:
            raise argparse.ArgumentTypeError("expected a comma-separated list of integers, got nothing")
        return [one(x) for x in items]

    parse.__name__ = "comma-separated integers"
    return parse


def finite_float(text: str) -> float:
    """A finite number (no nan or inf)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
    return value


def unit_interval_list(text: str) -> list[float]:
    """Comma-separated numbers in 0..1."""
    items = [x.strip() for x in text.split(",") if x.strip()]
    if not items:
        raise argparse.ArgumentTypeError("expected comma-separated numbers in 0..1, got nothing")
    values = [finite_float(x) for x in items]
    bad = [v for v in values if not 0.0 <= v <= 1.0]
    if bad:
        raise argparse.ArgumentTypeError(f"each value must lie in 0..1, got {', '.join(f'{b:g}' for b in bad)}")
    return values


def word_list(text: str) -> list[str]:
    """Comma-separated words; a word keeps its leading space (`` dog`` means that token only)."""
    items = [x for x in text.split(",") if x.strip()]
    if not items:
        raise argparse.ArgumentTypeError("expected comma-separated words, got nothing")
    return items


def names_list(text: str) -> list[str]:
    """Comma-separated names, stripped."""
    items = [x.strip() for x in text.split(",") if x.strip()]
    if not items:
        raise argparse.ArgumentTypeError("expected comma-separated names, got nothing")
    return items


def nonempty_text(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("the prompt is empty; give some text")
    return text


def add_model(p: argparse.ArgumentParser, *, several: bool = False) -> None:
    """The model argument(s), ``--device`` and ``--dtype`` (checked by :func:`model_options`)."""
    what = "bundled name (smollm2-135m, gemma3-270m), local HF folder, .gguf file or hub id"
    if several:
        p.add_argument("models", nargs="+", metavar="MODEL", help=f"one or more: {what}")
    else:
        p.add_argument("model", help=what)
    p.add_argument("--device", default="cpu", help=DEVICE_HELP)
    p.add_argument("--dtype", default="float32", help="weights' precision: float32 (default), bfloat16 or float16")


def model_options(args: argparse.Namespace) -> dict[str, Any]:
    """``device`` and ``dtype`` for ``interp.load``, checked before any work (a bad one: one line)."""
    from interp.loading import check_device, check_dtype

    return {"device": check_device(args.device), "dtype": check_dtype(args.dtype)}


def add_seed(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seed", default=0, type=int, help="seed of every random choice, so a rerun gives the same numbers "
                                                        "(default 0)")


def add_quiet(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def add_out(p: argparse.ArgumentParser, *, required: bool = True, what: str = "report folder") -> None:
    p.add_argument("--out", type=Path, required=required, metavar="DIR",
                   help=f"{what}: new, empty, or one interp wrote before (only interp's own files are replaced)")
    p.add_argument("--force", action="store_true",
                   help="write into a folder that holds other files too (they are left untouched)")


def add_max_new_tokens(p: argparse.ArgumentParser, default: int) -> None:
    p.add_argument("--max-new-tokens", type=at_least(1), default=default,
                   help=f"greedy tokens to generate (default {default})")
