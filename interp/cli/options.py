"""Options shared by the subcommands, defined once: their names, meanings, checks and help.

One meaning per name across subcommands: ``--layer`` is one layer and ``--layers`` a list;
``--max-new-tokens`` counts generated tokens; ``--top-tokens`` counts decoded tokens per
neuron; every list is comma-separated. Values are checked as they are parsed, so a bad one
ends the command with ``interp SUBCOMMAND: error: argument --X: ...`` before any work.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

from interp.errors import SEED_MAX, InterpError, real_number, whole_number

DEVICE_HELP = "where the model runs: cpu (default), cuda, cuda:N or mps"


@dataclasses.dataclass
class _Function:
    defaults: dict[str, Any]
    doc: str


@functools.cache  # every option of a command reads the same function: parse its file once
def _source(ref: str) -> _Function:
    """``"interp.probes.knob:knob"`` read from its source file, not imported: building the parser
    stays as fast as ``interp --help`` must be (the analyses import torch and more)."""
    import ast

    module, _, name = ref.partition(":")
    root = Path(__file__).resolve().parents[1]  # the interp package
    path = root.joinpath(*module.split(".")[1:])
    path = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
    tree = ast.parse(path.read_text(encoding="utf-8"))
    constants = {t.id: node.value for node in tree.body if isinstance(node, ast.Assign)
                 for t in node.targets if isinstance(t, ast.Name)}

    def value(node: ast.expr) -> Any:
        return ast.literal_eval(constants.get(node.id, node) if isinstance(node, ast.Name) else node)

    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == name:
            a = node.args
            positional = [*a.posonlyargs, *a.args]
            pairs = list(zip([x.arg for x in positional[len(positional) - len(a.defaults):]], a.defaults, strict=True))
            pairs += [(x.arg, d) for x, d in zip(a.kwonlyargs, a.kw_defaults, strict=True) if d is not None]
            return _Function({k: value(d) for k, d in pairs}, ast.get_docstring(node) or "")
    raise TypeError(f"no function {name} in {module}")


def default(owner: Any, name: str) -> Any:
    """The default of parameter ``name`` of the function ``owner`` (a callable, or
    ``"module:function"`` read from its source without importing it; or of the field ``name``
    of the dataclass ``owner``, or the entry of the dict ``owner``), as a command-line string: a
    default is written once, where the Python API declares it, and the CLI reads it there.

    >>> def f(x, *, lengths=(25, 50), k=8): ...
    >>> default(f, "lengths"), default(f, "k")
    ('25,50', 8)
    """
    if isinstance(owner, str):
        value = _source(owner).defaults[name]
    elif isinstance(owner, dict):
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
    lines = _source(owner).doc if isinstance(owner, str) else inspect.getdoc(owner) or ""
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


def option(p: argparse.ArgumentParser, flag: str, owner: Callable | str, name: str, **kwargs: Any) -> None:
    """``flag`` for parameter ``name`` of the analysis function ``owner``: its default read from
    the signature and its help from the docstring (:func:`default`, :func:`described`), so the
    CLI restates neither. The value lands in ``args.<name>``; :func:`arguments` collects them."""
    value = kwargs.pop("default", None)
    value = default(owner, name) if value is None else value
    text = kwargs.pop("help", None) or described(owner, name)
    shown = "" if value is None or value is False else f" (default {value})"
    kwargs.setdefault("metavar", flag.lstrip("-").upper().replace("-", "_"))
    p.add_argument(flag, dest=name, default=value, help=text + shown, **kwargs)
    p.set_defaults(_api=[*(p.get_default("_api") or []), name])


def arguments(args: argparse.Namespace) -> dict[str, Any]:
    """The values of every :func:`option` of the command, by the analysis function's parameter name."""
    return {name: getattr(args, name) for name in getattr(args, "_api", [])}


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
    from interp.loading import check_device, check_dtype

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
