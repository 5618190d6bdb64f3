"""The context-vs-prior knob (Minder et al.) on the bundled models: one table from the reports.

Runs ``interp knob MODEL --out case_studies/results/knob/MODEL`` with default settings for each
model whose report is missing (``--rerun`` for all), then writes
``case_studies/results/knob/summary.md``: accuracy under each intent, the localised layers,
the flip rates of the DAS and difference-of-means directions against random directions moved
by the same amount, and the separation-accuracy correlation.

    python case_studies/context_knob.py [--rerun] [--extra-layer 13]

``--extra-layer L`` also runs the subspace analysis at layer L for SmolLM2 (default settings
choose the last localised layer).

    python case_studies/context_knob.py --smoke [--out DIR]   # SmolLM2, 8 items, a short DAS fit (CI)
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from interp.cli import main
from interp.results.folders import output_folder

OUT = Path(__file__).parent / "results" / "knob"
KIND = "context_knob"  # the report kind of summary.md (the reports in MODEL/ are `interp knob`'s)
MODELS = ["smollm2-135m", "gemma3-270m"]
# --smoke: every part at the smallest scale.
SMOKE = ["--items", "8", "--das-steps", "5", "--random", "1", "--quiet"]


def row(name: str, doc: dict) -> str:
    acc, flips = doc["accuracy"], doc["flip_rate"]
    loc = "; ".join(f"{p} {v['layers']}" for p, v in doc["localisation"].items())
    r = doc["correlations"]
    return (f"| {name} | {acc['prior']:.3f} | {acc['context']:.3f} | {loc} | {doc['layer']} | {flips['das']:.3f} | "
            f"{flips['diff_means']:.3f} | {doc['random_flip_rate']:.3f} ({', '.join(f'{x:.3f}' for x in doc['random_flip_rates'])}) | "
            f"{r['das']:+.2f} / {r['diff_means']:+.2f} | {doc['das_train_items']} |")


def reading(name: str, doc: dict) -> str:
    """What the numbers say about the model, in a sentence or two (chance is 0.5 per intent)."""
    acc = doc["accuracy"]
    follows = acc["prior"] > 0.75 and acc["context"] > 0.75
    if follows:
        said = f"{name} follows both intents (prior {acc['prior']:.2f}, context {acc['context']:.2f})."
    else:
        lean = "context" if acc["context"] > acc["prior"] else "prior"
        said = (f"{name} does not follow the intents: it answers from the {lean} under both "
                f"(accuracy {acc['prior']:.2f} when asked for the prior, {acc['context']:.2f} when asked for the "
                f"context; 0.5 is chance). The subspace is therefore the one that separates the two "
                f"instructions in its residual stream, and the flip rate measures how far moving along it "
                f"switches the answer the model does give.")
    flips = doc["flip_rate"]
    ratio = flips["das"] / max(doc["random_flip_rate"], 1e-9)
    r = doc["correlations"]["das"]
    link = "does not predict" if abs(r) < 0.2 else ("goes with" if r > 0 else "goes against")
    return (f"- {said} Setting the projection on the DAS direction flips {flips['das']:.0%} of held-out answers "
            f"against {doc['random_flip_rate']:.0%} for random directions moved as far ({ratio:.1f}x); "
            f"difference of means flips {flips['diff_means']:.0%}. Separation along the direction {link} "
            f"an item's accuracy (r = {r:+.2f}).")


def main_(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rerun", action="store_true")
    ap.add_argument("--extra-layer", type=int)
    ap.add_argument("--smoke", action="store_true", help="SmolLM2 with 8 items, into --out (CI)")
    ap.add_argument("--out", type=Path, help="with --smoke: the results folder (default: a new temporary folder)")
    args = ap.parse_args(argv)
    out = OUT
    runs = {m: [m] for m in MODELS}
    if args.smoke:
        out = args.out or Path(tempfile.mkdtemp(prefix="knob-"))
        runs, args.rerun = {"smollm2-135m": ["smollm2-135m", *SMOKE]}, True
    if args.extra_layer is not None:
        runs[f"smollm2-135m-layer{args.extra_layer}"] = ["smollm2-135m", "--layer", str(args.extra_layer)]
    lines = ["# The context knob on the bundled models", "",
             "Produced by `python case_studies/context_knob.py`; each row is `interp knob MODEL` with default "
             "settings (200 items, half held out; threshold 0.8; flip rates at k = ±2) unless the name says "
             "otherwise. Flip rate: share of held-out prompts not already answered as steered that switch "
             "answer when the projection is set to midpoint ± 2 × half-gap of the intents' means. Correlation: "
             "per item, separation of the two intents' projections vs the share of its two prompts answered "
             "as asked (Pearson). Accuracy, as in the paper's one-word format: which of the two answers' "
             "first tokens has the larger logit at the first position of the reply. SmolLM2's greedy reply "
             "often restates the query first (\"Moscow is in Poland\"), so for it this reads its preference "
             "between the two answers, not the first word it writes.", "",
             "| run | acc. prior intent | acc. context intent | localised layers | subspace layer | flip DAS | "
             "flip diff-means | flip random (each) | r DAS / diff-means | DAS training items |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    notes = ["", "## Reading", ""]
    with output_folder(out, kind=KIND) as dest:  # checked and locked before the runs
        for name, argv_model in runs.items():
            folder = out / name
            if args.rerun or not (folder / "knob.json").exists():
                main(["knob", *argv_model, "--out", str(folder), "--force"])
            doc = json.loads((folder / "knob.json").read_text())
            lines.append(row(name, doc))
            notes.append(reading(name, doc))
        lines += notes
        dest.write_text("summary.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main_()
