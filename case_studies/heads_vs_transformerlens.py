"""Do our head scores rank heads as TransformerLens's head detector does, on the same sequences?

For each model, scores every head with ``interp.heads.scan`` (kernel statistics, SDPA) and with
TransformerLens 4 (``TransformerBridge.run_with_cache``, eager attention, then its
``head_detector`` detection patterns and ``compute_head_attention_similarity_score``) on the
very same repeated random token sequences, and reports the rank correlation over all heads.
TransformerLens scores every row, we score the second copy for induction and duplicate heads
(Olsson et al.'s protocol): that rescales every head alike and leaves ranks unchanged.

    python case_studies/heads_vs_transformerlens.py smollm2-135m gemma3-270m
    python case_studies/heads_vs_transformerlens.py --smoke [--out DIR]   # SmolLM2, one short sequence (CI)
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import torch

import interp
from interp.heads.sequences import repeated_random
from interp.models.loading import prepare
from interp.results.folders import output_folder
from interp.results.protocol import write_json

OUT = Path(__file__).parent / "results"
KIND = "heads_vs_transformerlens"  # the report kind of the files this study writes (interp.results.folders)
SCORES = {"induction": "induction_head", "prev_token": "previous_token_head", "duplicate": "duplicate_token_head"}


def transformerlens_scores(name: str, model, lengths, samples, seed) -> dict[str, np.ndarray]:
    from transformer_lens import head_detector as hd
    from transformer_lens.model_bridge import TransformerBridge

    bridge = TransformerBridge.boot_transformers(str(prepare(name).path), device="cpu", dtype=torch.float32)
    bridge.enable_compatibility_mode()
    patterns = {
        "induction": hd.get_induction_head_detection_pattern,
        "prev_token": hd.get_previous_token_head_detection_pattern,
        "duplicate": hd.get_duplicate_token_head_detection_pattern,
    }
    out = {s: [] for s in SCORES}
    for length in lengths:
        for seq in repeated_random(model, length, samples, seed + length):
            tokens = seq[None]
            with torch.no_grad():
                _, cache = bridge.run_with_cache(tokens, remove_batch_dim=True)
            for score, make in patterns.items():
                det = make(tokens.cpu())
                m = np.zeros((model.cfg.n_layers, model.cfg.n_heads))
                for layer in range(model.cfg.n_layers):
                    pat = cache["pattern", layer, "attn"]
                    for h in range(model.cfg.n_heads):
                        m[layer, h] = hd.compute_head_attention_similarity_score(
                            pat[h], detection_pattern=det, exclude_bos=False, exclude_current_token=False,
                            error_measure="mul")
                out[score].append(m)
    return {s: np.mean(v, axis=0) for s, v in out.items()}


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    return float(pd.Series(a.ravel()).rank().corr(pd.Series(b.ravel()).rank()))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="*", default=["smollm2-135m", "gemma3-270m"])
    parser.add_argument("--lengths", default="25,50,100")
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--smoke", action="store_true", help="SmolLM2 on one sequence of 6 tokens, into --out (CI)")
    parser.add_argument("--out", type=Path, help="with --smoke: the results folder (default: a new temporary folder)")
    args = parser.parse_args(argv)
    out = OUT
    if args.smoke:
        args.models, args.lengths, args.samples = ["smollm2-135m"], "6", 1
        out = args.out or Path(tempfile.mkdtemp(prefix="heads_vs_transformerlens-"))
    lengths = [int(x) for x in args.lengths.split(",")]
    with output_folder(out, kind=KIND) as dest:  # checked and locked before any model loads
        results = {}
        for name in args.models:
            model = interp.load(name)
            ours = interp.heads.scan(model, list(SCORES), lengths=lengths, samples=args.samples, seed=args.seed,
                                     text_samples=1, causal_checks=False, progress=False)
            theirs = transformerlens_scores(name, model, lengths, args.samples, args.seed)
            row = {}
            for score in SCORES:
                a, b = ours.matrix(score), theirs[score]
                top_ours = set(np.argsort(-a.ravel())[:10].tolist())
                top_theirs = set(np.argsort(-b.ravel())[:10].tolist())
                row[score] = {"spearman": spearman(a, b), "top10_overlap": len(top_ours & top_theirs)}
            results[name] = row
            print(name, json.dumps(row))
        lines = ["# Head scores: interp vs TransformerLens head_detector, same sequences", "",
                 f"Repeated random tokens, lengths {lengths}, {args.samples} sequences each, seed {args.seed}.", "",
                 "| model | score | Spearman over all heads | top-10 overlap |", "|---|---|---|---|"]
        for name, row in results.items():
            for score, r in row.items():
                lines.append(f"| {name} | {score} | {r['spearman']:.3f} | {r['top10_overlap']}/10 |")
        dest.write_text("heads_vs_transformerlens.md", "\n".join(lines) + "\n")
        write_json(dest, "heads_vs_transformerlens.json", results, end="")
        print("\n".join(lines))


if __name__ == "__main__":
    main()
