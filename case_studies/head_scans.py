"""Head scans of the bundled models, and what they say next to the papers' numbers.

Runs ``interp heads MODEL [MODEL ...]`` with default settings but five needle depths, into
``case_studies/results/head_scans/MODEL`` (and the index page there), and writes
``case_studies/results/head_scans.md``: the top heads per score, the share of
retrieval heads against Wu et al.'s 3-6%, the two causal checks, and the agreement with
TransformerLens's head detector (from ``heads_vs_transformerlens.json`` when present).

    python case_studies/head_scans.py [--models smollm2-135m,gemma3-270m] [--summary-only]
    python case_studies/head_scans.py --smoke [--out DIR]   # a tiny scan of SmolLM2 (CI), into a temporary folder
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd

from interp.core.sites import head_label
from interp.results.folders import output_folder

OUT = Path(__file__).parent / "results"
FOLDER = OUT / "head_scans"
KIND = "head_scans"  # the report kind of head_scans.md (the reports in head_scans/ are `interp heads`'s)
CLI = "import sys; from interp.cli import main; sys.exit(main(sys.argv[1:]))"
DEPTHS = ["--retrieval-depths", "0,0.25,0.5,0.75,1"]  # five depths, more than the CLI's default three
TOP_SCORES = ["prev_token", "duplicate", "induction", "induction_text", "ngram2", "retrieval"]
# --smoke: every part of the study at the smallest scale (SmolLM2, two scores, no causal checks).
SMOKE = ["--scores", "prev_token,induction", "--lengths", "8", "--samples", "2", "--no-causal-checks", "--quiet"]


def heads(rows: list[dict]) -> str:
    return ", ".join(head_label(h["layer"], h["head"]) for h in rows)


def section(name: str, doc: dict, agreement: dict) -> list[str]:
    df = pd.DataFrame(doc["scores"])
    checks = doc["checks"]
    shape = doc["shape"]
    lines = [f"## {name} ({shape['layers']} layers x {shape['heads']} query heads)", ""]
    lines += ["| score | top 5 heads (value) |", "|---|---|"]
    for score in TOP_SCORES:
        part = df[df["score"] == score].dropna(subset=["value"]).nlargest(5, "value")
        cells = ", ".join(f"{head_label(r.layer, r.head)} ({r.value:.2f})" for r in part.itertuples())
        lines.append(f"| {score} | {cells or 'n/a'} |")
    tests = checks.get("retrieval_tests", {})
    threshold = doc["settings"].get("retrieval", {}).get("threshold", 0.1)
    share = tests.get("share_above_threshold")
    if share is not None:
        n = int(round(share * shape["layers"] * shape["heads"]))
        lines += ["", f"Retrieval heads (score > {threshold}): {n} of {shape['layers'] * shape['heads']} "
                  f"({share:.1%}), over {tests.get('recalled')} of {tests.get('tests')} needle tests recalled; "
                  f"Wu et al. report 3-6% on 7B-70B models."]
    ab = checks.get("induction_ablation")
    if ab:
        rnd = ab["random_ablated_loss"]
        lines += ["", f"Induction check: mean-ablating the top {ab['k']} induction heads ({heads(ab['top_heads'])}) "
                  f"raises the loss on the second copy from {ab['clean_loss']:.2f} to {ab['top_ablated_loss']:.2f} "
                  f"(+{ab['loss_increase_top']:.2f}); {len(rnd)} sets of {ab['k']} random heads (seeds "
                  f"{', '.join(rnd)}): {', '.join(f'{v:.2f}' for v in rnd.values())} "
                  f"(+{ab['loss_increase_random_mean']:.2f} on average)."]
    mk = checks.get("retrieval_masking")
    if mk and "recall" in mk:
        r = mk["recall"]
        rand = {k: v for k, v in r.items() if k.startswith("random")}
        lines += ["", f"Retrieval check: needle recall (ROUGE-1, {mk['tests']} tests of {mk['length']} tokens) is "
                  f"{r['none']:.2f} unmasked and {r['top']:.2f} with the queries of the top {mk['k']} retrieval heads "
                  f"({heads(mk['top_heads'])}) zeroed while decoding; with {mk['k']} random heads from outside the "
                  f"top: {', '.join(f'{v:.2f}' for v in rand.values())}."]
    rows = agreement.get(name, {})
    if rows:
        lines += ["", "Against TransformerLens's head detector on the same sequences: "
                  + "; ".join(f"{score} Spearman {a['spearman']:.3f}, top-10 overlap {a['top10_overlap']}/10"
                              for score, a in rows.items()) + "."]
    return lines + [""]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="smollm2-135m,gemma3-270m")
    ap.add_argument("--summary-only", action="store_true", help="only rebuild the summary from saved reports")
    ap.add_argument("--smoke", action="store_true", help="a tiny scan of SmolLM2 into --out (CI)")
    ap.add_argument("--out", type=Path, help="with --smoke: the results folder (default: a new temporary folder)")
    args = ap.parse_args(argv)
    names = args.models.split(",")
    out, folder, how = OUT, FOLDER, DEPTHS
    if args.smoke:
        out = args.out or Path(tempfile.mkdtemp(prefix="head_scans-"))
        folder, how, names = out / "head_scans", SMOKE, ["smollm2-135m"]
    with output_folder(out, kind=KIND) as dest:  # checked and locked before the scans
        if not args.summary_only:  # one subfolder per model and the index page
            scans = folder if len(names) > 1 else folder / names[0]  # one model writes its report into --out itself
            subprocess.run([sys.executable, "-c", CLI, "heads", *names, "--out", str(scans), "--force", *how],
                           check=True)
        tl = OUT / "heads_vs_transformerlens.json"
        agreement = json.loads(tl.read_text()) if tl.exists() else {}
        lines = ["# Head scans of the bundled models", "",
                 "Produced by `python case_studies/head_scans.py` (`interp heads MODEL --retrieval-depths 0,0.25,0.5,0.75,1`, "
                 "otherwise default settings: repeated "
                 "random sequences of 25, 50 and 100 tokens, 8 each, seed 0; 4 natural-text windows of 512 tokens; "
                 "needles at 1000 and 2000 tokens, 5 depths, 3 needles). Heads are named LlayerHhead.", ""]
        for name in names:
            doc = json.loads((folder / name / "head_scores.json").read_text())
            lines += section(name, doc, agreement)
        dest.write_text("head_scans.md", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
