"""``interp models``: the bundled models, whether they are installed and cached.

$ interp models                       # table of bundled models and their cache state
$ interp models --prepare smollm2-135m  # convert now, so the first load is fast
"""

from __future__ import annotations

import argparse
import time


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list the bundled models, their install and cache state")
    p.add_argument(
        "--prepare",
        metavar="NAME",
        action="append",
        help="build the cache entry of a bundled model (or .gguf file) now; may be repeated",
    )
    p.set_defaults(run=run)


def _size(n: int) -> str:
    return f"{n / 1e6:.0f} MB" if n < 1e9 else f"{n / 1e9:.2f} GB"


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def list_models() -> str:
    from interp.cache import bundled_states, cache_dir

    rows = [["name", "package", "installed", "cache", "description"]]
    missing = []
    for s in bundled_states():
        installed = f"yes {s.version}" if s.version else "no"
        cache = "-" if s.state is None else s.state + (f" {_size(s.size)}" if s.size else "")
        rows.append([s.name, s.package, installed, cache, s.description])
        if s.version is None:
            missing.append(f"  {s.name}: {s.install_command}")
    text = _table(rows) + f"\n\ncache: {cache_dir()} (INTERP_CACHE overrides)"
    if missing:
        text += "\n\nto install the missing ones:\n" + "\n".join(missing)
    return text


def run(args: argparse.Namespace) -> int:
    if not args.prepare:
        print(list_models())
        return 0
    from interp.loading import prepare

    for name in args.prepare:
        start = time.perf_counter()
        entry = prepare(name)
        how = "built" if entry.built else "already cached, verified"
        print(f"{name}: {how} in {time.perf_counter() - start:.1f} s: {entry.path}")
    return 0
