"""``interp knob MODEL --out DIR``: the context-vs-prior knob (Minder et al.) on a model."""

from __future__ import annotations

import argparse
import json

from interp.cli import options as o


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("knob", help="find the 1-D subspace that switches answers between context and prior")
    o.add_model(p)
    o.add_out(p, what="folder for knob.json, direction.safetensors and knob.html")
    p.add_argument("--items", type=o.at_least(2), default=200, help="counterfactual items (half held out for testing)")
    o.add_seed(p)
    p.add_argument("--threshold", type=o.finite_float, default=0.8,
                   help="recovery (0..1] the localised layers must reach (default 0.8)")
    p.add_argument("--layer", type=o.at_least(0), help="layer of the subspace (default: the last localised layer)")
    p.add_argument("--das-steps", type=o.at_least(1), default=200, help="training steps of the rank-1 DAS direction")
    p.add_argument("--random", type=o.at_least(1), default=3, help="random directions for the baseline")
    o.add_quiet(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import interp
    from interp.errors import InterpError
    from interp.outputs import output_folder
    from interp.probes.knob import knob
    from interp.probes.knob_report import to_json, write_report

    how = o.model_options(args)  # device and dtype checked before anything else
    if not 0 < args.threshold <= 1:
        raise InterpError(f"--threshold must lie in (0, 1], got {args.threshold:g}")
    with output_folder(args.out, force=args.force) as out:  # locked before the model loads
        model = interp.load(args.model, **how)
        if args.layer is not None:
            model.check_layer(args.layer)
        result = knob(model, n_items=args.items, seed=args.seed, threshold=args.threshold, layer=args.layer,
                      das_steps=args.das_steps, n_random=args.random, progress=not args.quiet)
        write_report(result, out)
    doc = to_json(result)
    print(json.dumps({k: doc[k] for k in ("model", "accuracy", "layers", "layer", "flip_rate", "random_flip_rate",
                                          "correlation")}, indent=1))
    print(f"wrote {args.out / 'knob.json'}, {args.out / 'direction.safetensors'} and {args.out / 'knob.html'}")
    return 0
