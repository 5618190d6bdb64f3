"""Case study: the ICL inference circuit (Cho et al., ICLR'25) on SmolLM2-135M and Gemma-3-270M.

Runs ``interp icl`` for each model (default settings unless given) and writes a summary of the
numbers next to the reports: accuracy by k, the three steps by layer, and the knockout table
against its random controls.

    python case_studies/icl_circuit.py                       # both models (~8 + ~20 minutes on 2 CPU cores,
                                                             # plus ~2.5 each for activation patching)
    python case_studies/icl_circuit.py --models smollm2-135m --summary-only
    python case_studies/icl_circuit.py --smoke [--out DIR]   # SmolLM2, a few prompts of each part (CI)
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd

from interp.circuits.report import ICLResult
from interp.core.sites import head_label
from interp.results.folders import output_folder
from interp.results.protocol import write_json

OUT = Path(__file__).parent / "results" / "icl_circuit"
KIND = "icl_circuit"  # the report kind of the summary files (the reports in MODEL/ are `interp icl`'s)
NOTES = """Read with care: the query counts are small (settings in each icl.json), so one prompt is 3-8 points
of accuracy; the alignment's chance level is neighbors / (queries - 1). Thresholds are the paper's
(5 / n_t for merge and induction heads, 5 / (n_t |Y|) for correct induction heads). The merge step is
measured on every demonstration's label (the paper reads the appended query label). Knockout rows
compare the step's edges with the same number of random causal edges in the same layers (seed 0).
Activation patching (where a report has patching.parquet) restores a clean query's activations into
a prompt with the same demonstrations and a query of another label; effect 1 restores the clean
logit difference of the two labels (settings: patching_pairs pairs per dataset).
"""
CLI = "import sys; from interp.cli import main; sys.exit(main(sys.argv[1:]))"
# --smoke: every step at the smallest scale (one dataset, two demonstrations, four queries).
SMOKE = ["--datasets", "sentiment", "--demo-counts", "0,2", "--demos", "2", "--queries", "4", "--ablation-queries", "2",
         "--random-seeds", "0", "--neighbors", "1", "--patching-pairs", "1"]


def summarize(result: ICLResult) -> dict:
    acc = result["accuracy"].pivot_table(index="dataset", columns="k", values="accuracy")
    L = result.n_layers
    out: dict = {"model": result.model, "layers": L, "accuracy_by_k": {d: {int(k): round(v, 3) for k, v in row.items()}
                                                                         for d, row in acc.iterrows()}}
    steps = {}
    for ds in acc.index:
        s, m, r = (result[t][result[t]["dataset"] == ds] for t in ("summarize", "merge", "retrieval"))
        best = s.loc[s["alignment"].idxmax()] if len(s) else None
        steps[ds] = {
            "alignment_peak_layer": None if best is None else int(best["layer"]),
            "alignment_peak": None if best is None else round(float(best["alignment"]), 3),
            "alignment_chance": None if best is None else round(float(best["chance"]), 3),
            "alignment_by_quarter": [round(float(s[(s["layer"] >= q * L // 4) & (s["layer"] < (q + 1) * L // 4)]["alignment"].mean()), 3) for q in range(4)] if len(s) else None,
            "merge_heads_by_quarter": [round(float(m[(m["layer"] >= q * L // 4) & (m["layer"] < (q + 1) * L // 4)]["heads_above"].sum()), 2) for q in range(4)],
            "induction_heads_by_quarter": [round(float(r[(r["layer"] >= q * L // 4) & (r["layer"] < (q + 1) * L // 4)]["induction_heads"].sum()), 2) for q in range(4)],
            "correct_induction_heads_by_quarter": [round(float(r[(r["layer"] >= q * L // 4) & (r["layer"] < (q + 1) * L // 4)]["correct_induction_heads"].sum()), 2) for q in range(4)],
        }
    out["steps"] = steps
    if result.patching_summary:
        out["patching"] = {ds: {key: p.get(key) for key in ("pairs", "clean_logit_diff", "corrupted_logit_diff",
                                                               "top_heads", "resid_pre_peak")}
                           for ds, p in result.patching_summary.items()}
    ab = result["ablation"]
    if len(ab):
        own = ab[ab["step"] != "random"].set_index(["dataset", "step", "quarter"])["accuracy"]
        rnd = ab[ab["step"] == "random"].groupby(["dataset", "matched_step", "quarter"])["accuracy"].mean()
        base = ab.groupby("dataset")["baseline_accuracy"].first()
        out["ablation"] = [{"dataset": d, "step": st, "quarter": int(q), "accuracy": round(float(v), 3),
                            "random_accuracy": round(float(rnd[(d, st, q)]), 3), "baseline": round(float(base[d]), 3)}
                           for (d, st, q), v in own.items()]
    return out


def markdown(s: dict) -> str:
    lines = [f"## {s['model']} ({s['layers']} layers)", "", "Accuracy by k (label-space argmax of the last token):", ""]
    ks = sorted({k for row in s["accuracy_by_k"].values() for k in row})
    lines += ["| dataset | " + " | ".join(f"k={k}" for k in ks) + " |", "|---" * (len(ks) + 1) + "|"]
    for d, row in s["accuracy_by_k"].items():
        lines.append(f"| {d} | " + " | ".join(f"{row.get(k, float('nan')):.3f}" for k in ks) + " |")
    lines += ["", "Steps by depth quarter (Q1..Q4; heads = mean heads per prompt above the threshold, summed over the quarter's layers):", ""]
    lines += ["| dataset | alignment (chance) | merge heads | induction heads | correct induction heads |", "|---|---|---|---|---|"]
    for d, st in s["steps"].items():
        al = "n/a" if st["alignment_by_quarter"] is None else f"{st['alignment_by_quarter']} ({st['alignment_chance']})"
        lines.append(f"| {d} | {al} | {st['merge_heads_by_quarter']} | {st['induction_heads_by_quarter']} | "
                     f"{st['correct_induction_heads_by_quarter']} |")
    if s.get("ablation"):
        lines += ["", "Knockout accuracy (step's edges vs the same number of random edges, same layers):", "",
                  "| dataset | step | Q1 | Q2 | Q3 | Q4 | baseline |", "|---|---|---|---|---|---|---|"]
        df = pd.DataFrame(s["ablation"])
        for (d, st), part in df.groupby(["dataset", "step"], sort=False):
            cells = [f"{r.accuracy:.3f} / {r.random_accuracy:.3f}" for r in part.sort_values("quarter").itertuples()]
            lines.append(f"| {d} | {st} | " + " | ".join(cells) + f" | {part['baseline'].iloc[0]:.3f} |")
    if s.get("patching"):
        lines += ["", "Activation patching (clean query → a query of another label, same demonstrations; effect 1 "
                  "restores the clean logit difference):", "",
                  "| dataset | pairs | logit diff clean / corrupted | top heads (blocks.*.attn.hook_z) | blocks.*.hook_resid_pre peak |",
                  "|---|---|---|---|---|"]
        def f2(v) -> str:
            return "n/a" if v is None else f"{v:.2f}"

        for d, p in s["patching"].items():
            heads = ", ".join(f"{head_label(h['layer'], h['head'])} {f2(h['effect'])}" for h in (p.get("top_heads") or [])[:3])
            peak = p.get("resid_pre_peak")
            where = "n/a" if not peak else f"L{peak['layer']} pos {peak['position']} ({peak['token']!r}) {f2(peak['effect'])}"
            diffs = f"{f2(p.get('clean_logit_diff'))} / {f2(p.get('corrupted_logit_diff'))}"
            lines.append(f"| {d} | {p.get('pairs')} | {diffs} | {heads or 'n/a'} | {where} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="smollm2-135m,gemma3-270m")
    ap.add_argument("--summary-only", action="store_true", help="only rebuild the summary from saved results")
    ap.add_argument("--smoke", action="store_true", help="SmolLM2 with a few prompts per step, into --out (CI)")
    ap.add_argument("--out", type=Path, help="with --smoke: the results folder (default: a new temporary folder)")
    ap.add_argument("extra", nargs="*", help="extra arguments for interp icl (after --)")
    args = ap.parse_args(argv)
    out = OUT
    if args.smoke:
        out = args.out or Path(tempfile.mkdtemp(prefix="icl_circuit-"))
        args.models, args.extra = "smollm2-135m", [*SMOKE, *args.extra]
    summaries = []
    with output_folder(out, kind=KIND) as dest:  # checked and locked before the reports are made
        for name in args.models.split(","):
            folder = out / name
            if not args.summary_only:
                subprocess.run([sys.executable, "-c", CLI, "icl", name, "--out", str(folder), "--force", "--quiet",
                                *args.extra], check=True)
            summaries.append(summarize(ICLResult.load(folder)))
        write_json(dest, "summary.json", summaries, end="")
        dest.write_text("summary.md", "# ICL inference circuit: measured numbers\n\n" + NOTES + "\n"
                        + "\n".join(markdown(s) for s in summaries))
    print((out / "summary.md").read_text())


if __name__ == "__main__":
    main()
