"""``interp knob MODEL --out DIR``: the context-vs-prior knob (Minder et al.) on a model."""

from __future__ import annotations

import argparse

from interp.cli import options as o


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("knob", help="find the 1-D subspace that switches answers between context and prior")
    o.add_model(p)
    o.add_out(p, what="folder for knob.json, direction.safetensors and knob.html")
    knob = "interp.probes.knob:knob"
    o.option(p, "--items", knob, "n_items", type=o.at_least(2))
    o.add_seed(p)
    o.option(p, "--threshold", knob, "threshold", type=o.finite_float)
    o.option(p, "--layer", knob, "layer", type=o.at_least(0))
    o.option(p, "--das-steps", knob, "das_steps", type=o.at_least(1))
    o.option(p, "--random", knob, "n_random", type=o.at_least(1))
    o.add_quiet(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import interp
    from interp.errors import InterpError
    from interp.probes.knob import knob
    from interp.probes.knob_report import write_report
    from interp.results.folders import output_folder
    from interp.results.strict_json import dumps

    how = o.model_options(args)  # device and dtype checked before anything else
    if not 0 < args.threshold <= 1:  # before the model loads
        raise InterpError(f"--threshold must lie in (0, 1], got {args.threshold:g}")
    with output_folder(args.out, force=args.force, kind="knob") as out:  # locked before the model loads
        model = interp.load(args.model, **how)
        if args.layer is not None:
            model.check_layer(args.layer)
        result = knob(model, seed=args.seed, progress=not args.quiet, **o.arguments(args))
        write_report(result, out)
    doc = result.to_dict()
    print(dumps({k: doc[k] for k in ("model", "accuracy", "layers", "layer", "flip_rate", "random_flip_rate",
                                          "correlation")}, indent=1))
    print(f"wrote {args.out / 'knob.json'}, {args.out / 'direction.safetensors'} and {args.out / 'knob.html'}")
    return 0
