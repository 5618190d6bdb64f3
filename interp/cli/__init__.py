"""The ``interp`` command line. Each subcommand lives in its own module with a ``register``.

Every failure ends in one line, ``interp SUBCOMMAND: error: ...``, and exit code 2 for bad
input (1 for an unexpected error, 130 when interrupted); ``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from interp.cli import options
from interp.errors import InterpError, check_text
from interp.logs import logger

# Modules under interp.cli that each define register(subparsers).
COMMANDS = ["models", "trace", "heads", "neurons", "knob", "app", "icl"]


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    def v(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "not installed"

    return f"interp {v('interp')} (torch {v('torch')}, transformers {v('transformers')}, python {sys.version.split()[0]})"


class Parser(argparse.ArgumentParser):
    """argparse, with a bad argument reported in one line (no usage block above it), and the
    defaults and help of options read from an analysis function's signature and docstring once
    its command's arguments have parsed or its help is asked for (``options.resolve``)."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")

    def parse_known_args(self, args=None, namespace=None):  # type: ignore[override]
        namespace, extras = super().parse_known_args(args, namespace)
        options.resolve(self, namespace)
        return namespace, extras

    def format_help(self) -> str:
        options.resolve(self)
        return super().format_help()


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="interp", description="Mechanistic interpretability for open LMs.")
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        importlib.import_module(f"interp.cli.{name}").register(sub)
    for p in sub.choices.values():
        p.add_argument("--debug", action="store_true", help="on an error, show the full traceback")
    return parser


def _check_text(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Every argument must be Unicode text. Bytes that are not UTF-8 (which Python keeps as lone
    surrogates) in a prompt, a word or a folder name end the command here, naming the argument,
    before any work: no tokenizer, JSON file or report could hold them."""
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[args.command]
    for action in sub._actions:
        values = getattr(args, action.dest, None)
        for value in values if isinstance(values, (list, tuple)) else [values]:
            if isinstance(value, (str, os.PathLike)):
                name = "/".join(action.option_strings) or action.metavar or action.dest
                try:
                    check_text(os.fspath(value), f"argument {name}:")
                except InterpError as exc:
                    sub.error(str(exc))


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _check_text(parser, args)
    where = f"interp {args.command}"
    log = logger("interp.cli")
    if getattr(args, "quiet", False):
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # transformers' own weight-loading bar
        logging.getLogger("interp").setLevel(logging.WARNING)  # interp's notes too; warnings still show
    try:
        return int(args.run(args) or 0)
    except InterpError as exc:
        if args.debug:
            raise
        log.error(f"{where}: error: {exc}")
        return 2
    except KeyboardInterrupt:
        log.error(f"{where}: interrupted (a rerun of the same command resumes where it can)")
        return 130
    except Exception as exc:  # a bug: still one line, with the way to the traceback
        if args.debug:
            raise
        text = " ".join(str(exc).split()) or "(no message)"
        log.error(f"{where}: error: unexpected {type(exc).__name__}: {text} (rerun with --debug for the traceback)")
        return 1


if __name__ == "__main__":
    sys.exit(main())
