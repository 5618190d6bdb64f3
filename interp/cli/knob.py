"""``interp knob MODEL --out DIR``: the context-vs-prior knob (Minder et al.) on a model."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from interp.errors import UnknownNameError

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("knob", help="find the 1-D subspace that switches answers between context and prior")
    p.add_argument("model", help="bundled name, local HF folder, .gguf file or hub id")
    p.add_argument("--out", type=Path, required=True, help="folder for knob.json, direction.safetensors, knob.html")
    p.add_argument("--items", type=int, default=200, help="counterfactual items (half held out for testing)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threshold", type=float, default=0.8, help="recovery the localised layers must reach")
    p.add_argument("--layer", type=int, help="layer of the subspace (default: the last localised layer)")
    p.add_argument("--das-steps", type=int, default=200)
    p.add_argument("--random", type=int, default=3, help="random directions for the baseline")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32", help=f"one of {', '.join(DTYPES)}")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import interp
    from interp.probes.knob import knob
    from interp.probes.knob_report import to_json, write_report

    if args.dtype not in DTYPES:
        raise UnknownNameError("dtype", args.dtype, list(DTYPES))
    model = interp.load(args.model, device=args.device, dtype=DTYPES[args.dtype])
    result = knob(model, n_items=args.items, seed=args.seed, threshold=args.threshold, layer=args.layer,
                  das_steps=args.das_steps, n_random=args.random, progress=not args.quiet)
    write_report(result, args.out)
    doc = to_json(result)
    print(json.dumps({k: doc[k] for k in ("model", "accuracy", "layers", "layer", "flip_rate", "random_flip_rate",
                                          "correlation")}, indent=1))
    print(f"wrote {args.out / 'knob.json'}, {args.out / 'direction.safetensors'} and {args.out / 'knob.html'}")
    return 0
