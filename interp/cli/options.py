"""Options shared by the subcommands, defined once: their names, meanings, checks and help.

One meaning per name across subcommands: ``--layer`` is one layer and ``--layers`` a list;
``--max-new-tokens`` counts generated tokens; ``--top-tokens`` counts decoded tokens per
neuron; every list is comma-separated. Values are checked as they are parsed, so a bad one
ends the command with ``interp SUBCOMMAND: error: argument --X: ...`` before any work.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

from interp.errors import SEED_MAX, InterpError, real_number, whole_number

DEVICE_HELP = "where the model runs: cpu (default), cuda, cuda:N or mps"


def _function(owner: Callable | str) -> Callable:
    """``owner`` itself, or the function a ``"module:function"`` string names (imported now)."""
    if not isinstance(owner, str):
        return owner
    module, _, name = owner.partition(":")
    function = getattr(importlib.import_module(module), name, None)
    if not callable(function):
        raise TypeError(f"no function {name} in {module}")
    return function


def default(owner: Any, name: str) -> Any:
    """The default of parameter ``name`` of the function ``owner`` (a callable, or a
    ``"module:function"`` string naming one), read from its signature; or of the field ``name`` of
    the dataclass ``owner``, or the entry of the dict ``owner``; as a command-line string: a
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
        function = _function(owner)
        value = inspect.signature(function).parameters[name].default
        if value is inspect.Parameter.empty:
            raise TypeError(f"{function.__name__}() has no default for {name}")
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return value


def described(owner: Callable | str, name: str) -> str:
    """The description of parameter ``name`` in the ``Args:`` section of ``owner``'s docstring
    (entries ``name: text`` or ``a, b: text``; continuation lines indented deeper).

    >>> def f(n_items=2):
    ...     '''Args:
    ...         n_items: counterfactual items (half held out
    ...             for testing).
    ...     '''
    >>> described(f, "n_items")
    'counterfactual items (half held out for testing)'
    """
    lines = inspect.getdoc(_function(owner)) or ""
    entries: dict[str, list[str]] = {}
    current: list[str] | None = None
    indent = None
    in_args = False
    for line in lines.splitlines():
        if line.strip() == "Args:":
            in_args, indent = True, None
            continue
        if not in_args:
            continue
        if not line.strip():
            current = None
            continue
        width = len(line) - len(line.lstrip())
        if indent is None:
            indent = width
        if width < indent:
            break
        head, sep, text = line.strip().partition(": ")
        if width == indent and sep:
            current = [text]
            for key in head.split(", "):
                entries[key.strip()] = current
        elif current is not None:
            current.append(line.strip())
    if name not in entries:
        raise TypeError(f"{owner}'s docstring describes no parameter {name!r} (add it to its Args:)")
    return " ".join(entries[name]).replace("``", "").rstrip(".")


class _Later:
    """The default of an option whose analysis function is not imported yet (see :func:`option`)."""

    def __repr__(self) -> str:
        return "(the analysis function's default)"


LATER = _Later()


def option(p: argparse.ArgumentParser, flag: str, owner: Callable | str, name: str, **kwargs: Any) -> None:
    """``flag`` for parameter ``name`` of the analysis function ``owner``: its default read from
    the signature and its help from the docstring (:func:`default`, :func:`described`), so the
    CLI restates neither. The value lands in ``args.<name>``; :func:`arguments` collects them.

    ``owner`` given as ``"module:function"`` is imported only when the command's arguments have
    parsed or its help is shown (:func:`resolve`, which ``interp.cli.Parser`` calls): building the
    parser stays light, and a bad argument is reported before torch loads."""
    value = kwargs.pop("default", None)
    text = kwargs.pop("help", None)
    kwargs.setdefault("metavar", flag.lstrip("-").upper().replace("-", "_"))
    action = p.add_argument(flag, dest=name, default=LATER, help=text or f"(see {owner})", **kwargs)
    action.interp_option = (owner, name, value, text)  # type: ignore[attr-defined]
    p.set_defaults(_api=[*(p.get_default("_api") or []), name])
    if not isinstance(owner, str):
        resolve(p)


def resolve(p: argparse.ArgumentParser, namespace: argparse.Namespace | None = None) -> None:
    """Fill in the defaults and help of ``p``'s :func:`option` flags from their functions (imported
    here), and in ``namespace`` (parsed arguments) the value of each flag not given."""
    for action in p._actions:
        spec = getattr(action, "interp_option", None)
        if spec is not None:
            owner, name, value, text = spec
            value = default(owner, name) if value is None else value
            shown = "" if value is None or value is False else f" (default {value})"
            action.default, action.help = value, (text or described(owner, name)) + shown
            del action.interp_option  # type: ignore[attr-defined]
        if namespace is not None and getattr(namespace, action.dest, None) is LATER:
            value = action.default
            if isinstance(value, str) and callable(action.type):
                try:
                    value = action.type(value)
                except argparse.ArgumentTypeError as exc:  # a default the option's own type refuses: a bug
                    raise TypeError(f"the default of {'/'.join(action.option_strings)} is refused: {exc}") from None
            setattr(namespace, action.dest, value)


def arguments(args: argparse.Namespace) -> dict[str, Any]:
    """The values of every :func:`option` of the command, by the analysis function's parameter name."""
    values = {name: getattr(args, name) for name in getattr(args, "_api", [])}
    unresolved = [name for name, value in values.items() if value is LATER]
    if unresolved:
        raise TypeError(f"{', '.join(unresolved)} still wait for their defaults: parse with interp.cli.Parser, "
                        "which reads them from the analysis function")
    return values


def _checked(check: Callable[[], Any]) -> Any:
    """The value ``check`` returns; its ``InterpError`` (from the checks every entry point uses,
    ``interp.errors``) as argparse's error, so the CLI says what the Python API says."""
    try:
        return check()
    except InterpError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def at_least(low: int, high: int | None = None) -> Callable[[str], int]:
    """An integer of at least ``low`` (and at most ``high``, if given)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        return _checked(lambda: whole_number(value, low, "", high=high))

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
    return _checked(lambda: real_number(value, ""))


def unit_interval_list(text: str) -> list[float]:
    """Comma-separated numbers in 0..1."""
    items = [x.strip() for x in text.split(",") if x.strip()]
    if not items:
        raise argparse.ArgumentTypeError("expected comma-separated numbers in 0..1, got nothing")
    values = [finite_float(x) for x in items]
    return [_checked(lambda: real_number(v, "each value", 0, 1)) for v in values]  # noqa: B023 (called at once)


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
    from interp.models.loading import check_device, check_dtype

    return {"device": check_device(args.device), "dtype": check_dtype(args.dtype)}


# Seeds feed torch (64 bits), NumPy and random, some with an offset added: 32 bits fit them all.


def add_seed(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seed", default=0, type=at_least(0, SEED_MAX),
                   help=f"seed of every random choice (0..{SEED_MAX}), so a rerun gives the same numbers (default 0)")


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
