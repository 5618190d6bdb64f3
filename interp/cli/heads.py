"""``interp heads MODEL [MODEL ...] --out DIR``: scan every head and write head-score reports."""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import torch

from interp.errors import InterpError, UnknownNameError

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def _floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x]


def register(sub: argparse._SubParsersAction) -> None:
    from interp.heads.head_scan import SCORES

    p = sub.add_parser("heads", help="score every attention head and write reports")
    p.add_argument("models", nargs="+", help="bundled names, local HF folders, .gguf files or hub ids")
    p.add_argument("--out", required=True, type=Path, help="report folder (one subfolder per model if several)")
    p.add_argument("--scores", default=",".join(SCORES), help=f"comma-separated, from: {', '.join(SCORES)}")
    p.add_argument("--lengths", default="25,50,100", type=_ints, help="repeated random sequence lengths")
    p.add_argument("--samples", default=8, type=int, help="random sequences per length")
    p.add_argument("--text-tokens", default=512, type=int, help="tokens per natural-text window")
    p.add_argument("--text-samples", default=4, type=int, help="natural-text windows")
    p.add_argument("--retrieval-lengths", default="1000,2000", type=_ints, help="needle-in-a-haystack lengths")
    p.add_argument("--retrieval-depths", default="0,0.5,1", type=_floats,
                   help="needle depths in the haystack (0: start, 1: end)")
    p.add_argument("--mask-k", default=10, type=int, help="heads masked in the retrieval masking check")
    p.add_argument("--seed", default=0, type=int)
    p.add_argument("--exclude-bos", action="store_true", help="leave the first token out of pattern scores")
    p.add_argument("--exclude-current", action="store_true", help="leave each query's own token out")
    p.add_argument("--no-causal-checks", action="store_true", help="skip the ablation checks")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32", help=f"one of {', '.join(DTYPES)}")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(run=run)


def _folder_name(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def run(args: argparse.Namespace) -> int:
    import interp
    from interp.heads.head_scan import check_scores, plan_scan
    from interp.heads.report import write_index

    if args.dtype not in DTYPES:
        raise UnknownNameError("dtype", args.dtype, list(DTYPES))
    names = check_scores(s.strip() for s in args.scores.split(",") if s.strip())
    settings = dict(
        lengths=args.lengths, samples=args.samples, text_tokens=args.text_tokens, text_samples=args.text_samples,
        seed=args.seed, exclude_bos=args.exclude_bos, exclude_current=args.exclude_current,
        causal_checks=not args.no_causal_checks,
        retrieval={"lengths": tuple(args.retrieval_lengths), "depths": tuple(args.retrieval_depths),
                   "mask_k": args.mask_k},
    )

    def load(spec: str) -> interp.Model:
        return interp.load(spec, device=args.device, dtype=DTYPES[args.dtype])

    # Every model's settings and needles are checked before any scan starts, so bad input
    # leaves neither a report nor a checkpoint folder behind. With several models each is
    # loaded again for its scan rather than all held in memory at once.
    several = len(args.models) > 1
    kept: interp.Model | None = None
    folders: dict[str, Path] = {}
    for spec in args.models:
        model = load(spec)
        plan_scan(model, names, **settings)
        out = args.out / _folder_name(model.name) if several else args.out
        if out in folders.values():
            raise InterpError(f"two of the models would write to {out}: {', '.join(args.models)}")
        folders[model.name] = out
        kept = None if several else model
        del model
    for spec, (name, out) in zip(args.models, folders.items(), strict=True):
        model = kept if kept is not None else load(spec)
        partial = out.with_name(f".{out.name}.partial")  # resumable progress, removed on success
        scores = interp.heads.scan(model, names, **settings, checkpoint=str(partial), progress=not args.quiet)
        scores.save(out)
        shutil.rmtree(partial, ignore_errors=True)
        print(f"{name}: wrote {out}/report.html")
        for score in scores.scores:
            top = scores.top(score, 3)
            print(f"  {score:<16} top heads: " + ", ".join(f"L{r.layer}H{r.head} {r.value:.2f}" for r in top.itertuples()))
        del model
    if several:
        print(f"index: {write_index(folders, args.out)}")
    return 0
