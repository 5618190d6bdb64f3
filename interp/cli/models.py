"""``interp models``: the bundled models, whether they are installed and cached.

$ interp models                       # table of bundled models and their cache state
$ interp models --verify              # the same, hashing every cached file (about a second per GB)
$ interp models --prepare smollm2-135m  # convert now, so the first load is fast

The listing checks each cache entry cheaply (manifest, file list, file sizes): a missing or
truncated file shows as damaged at once. Every load still checks the sha256 of every file.
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
    p.add_argument(
        "--verify",
        action="store_true",
        help="also check the sha256 of every cached file (a load always does; about a second per GB)",
    )
    p.set_defaults(run=run)


def _size(n: int) -> str:
    return f"{n / 1e6:.0f} MB" if n < 1e9 else f"{n / 1e9:.2f} GB"


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _cache_cell(state: str | None, size: int, hashed: bool) -> str:
    if state is None:
        return "-"
    text = state + (f" {_size(size)}" if size else "")
    if state == "ready":
        text += " (sha256 checked)" if hashed else " (verified on load)"
    elif state == "damaged":
        text += " (rebuilt on the next load)"
    return text


def list_models(verify: bool = False) -> str:
    from interp.models.cache import bundled_states, cache_dir

    rows = [["name", "package", "installed", "cache", "description"]]
    missing = []
    for s in bundled_states(hashes=verify):
        installed = f"yes {s.version}" if s.version else "no"
        cache = _cache_cell(s.state, s.size, s.hashed)
        rows.append([s.name, s.package, installed, cache, s.description])
        if s.version is None:
            missing.append(f"  {s.name}: {s.install_command}")
    text = _table(rows) + f"\n\ncache: {cache_dir()} (INTERP_CACHE overrides)"
    if missing:
        text += "\n\nto install the missing ones:\n" + "\n".join(missing)
    return text


def run(args: argparse.Namespace) -> int:
    if not args.prepare:
        print(list_models(verify=args.verify))
        return 0
    from interp.models.loading import prepare

    for name in args.prepare:
        start = time.perf_counter()
        entry = prepare(name)
        how = "built" if entry.built else "already cached, verified"
        print(f"{name}: {how} in {time.perf_counter() - start:.1f} s: {entry.path}")
    return 0
