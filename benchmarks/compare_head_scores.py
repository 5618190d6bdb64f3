"""Compare two ``head_scores.json`` reports of the same model and settings, score by score.

Pattern scores should agree to float precision; retrieval scores come from greedy decoding and
arg-max keys, where a near-tie can flip a token or a key, so every head that moves by more than
``--tolerance`` is listed, with the needle tests whose recall changed.

    python benchmarks/compare_head_scores.py case_studies/results/head_scans/smollm2-135m new_scan/smollm2-135m
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def _load(folder: Path) -> dict:
    return json.loads((folder / "head_scores.json").read_text())


def _matrices(doc: dict) -> dict[str, np.ndarray]:
    shape = (doc["shape"]["layers"], doc["shape"]["heads"])
    out: dict[str, np.ndarray] = {}
    for row in doc["scores"]:
        m = out.setdefault(row["score"], np.full(shape, np.nan))
        m[row["layer"], row["head"]] = np.nan if row["value"] is None else row["value"]
    return out


def compare(old: Path, new: Path, tolerance: float = 0.02) -> list[str]:
    a, b = _load(old), _load(new)
    ma, mb = _matrices(a), _matrices(b)
    lines = [f"# {a['model']}: {old} vs {new}", "", "| score | max abs difference | heads over tolerance |",
             "|---|---|---|"]
    moved: list[str] = []
    for score in ma:
        if score not in mb:
            lines.append(f"| {score} | missing in the new report | |")
            continue
        d = np.abs(ma[score] - mb[score])
        over = np.argwhere(d > (1e-5 if score != "retrieval" else tolerance))
        lines.append(f"| {score} | {np.nanmax(d):.2e} | {len(over)} |")
        for layer, head in over:
            moved.append(f"- {score} L{layer}H{head}: {ma[score][layer, head]:.4f} -> {mb[score][layer, head]:.4f}")
    lines += ["", *moved]
    ta = (a.get("checks") or {}).get("retrieval_tests", {}).get("per_test", [])
    tb = (b.get("checks") or {}).get("retrieval_tests", {}).get("per_test", [])
    key = lambda t: (t["needle"], t["length"], t["depth"])  # noqa: E731
    rb = {key(t): t for t in tb}
    changed = [(t, rb.get(key(t))) for t in ta if rb.get(key(t)) is None or rb[key(t)]["recalled"] != t["recalled"]
               or rb[key(t)]["response"] != t["response"]]
    recalled = (sum(t["recalled"] for t in ta), sum(t["recalled"] for t in tb))
    lines += ["", f"needle tests recalled: {recalled[0]} -> {recalled[1]} of {len(ta)}; tests whose response changed: "
              f"{len(changed)}"]
    for t, u in changed:
        lines.append(f"- needle {t['needle']}, {t['length']} tokens, depth {t['depth']}: {t['response']!r} "
                     f"(recall {t['recall']:.2f}) -> {u['response']!r} (recall {u['recall']:.2f})" if u else
                     f"- {key(t)} missing in the new report")
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("old", type=Path)
    p.add_argument("new", type=Path)
    p.add_argument("--tolerance", type=float, default=0.02, help="retrieval difference worth listing")
    args = p.parse_args()
    print("\n".join(compare(args.old, args.new, args.tolerance)))


if __name__ == "__main__":
    main()
