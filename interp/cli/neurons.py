"""``interp neurons MODEL --out DIR`` / ``--find WORD[,WORD] [--clamp VALUE --prompt TEXT]``: feature neurons.

``--out`` decodes every MLP neuron through the LM head and writes ``neurons.parquet`` and a
searchable ``neurons.html``; ``--find`` prints the neurons that decode to a concept and,
with ``--clamp``, steers generation from ``--prompt`` with the top one (or ``--neuron L:N``).
"""

from __future__ import annotations

import argparse
import contextlib

from interp.cli import options as o
from interp.errors import InterpError


def _neuron(text: str) -> tuple[int, int]:
    try:
        layer, neuron = text.upper().lstrip("L").replace("N", ":").split(":")
        return int(layer), int(neuron)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LAYER:NEURON such as 12:345, got {text!r}") from None


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("neurons", help="decode MLP neurons through the LM head; find and clamp concept neurons")
    o.add_model(p)
    o.add_out(p, required=False, what="folder for neurons.parquet and neurons.html")
    p.add_argument("--find", type=o.word_list, metavar="WORD[,WORD]",
                   help="comma-separated concept words (a leading space means that token only: ' dog,dogs')")
    decode, find = "interp.neurons.decoding:decode", "interp.neurons.find:find"
    o.option(p, "--weights", decode, "weights")
    o.option(p, "--top-tokens", decode, "k", type=o.at_least(1))
    p.add_argument("--html-top-tokens", type=o.at_least(1), default=5, help="top tokens per neuron shown in neurons.html")
    p.add_argument("--layers", type=o.int_list(0), help="comma-separated layers (default: all)")
    p.add_argument("--no-input-ln", action="store_true", help="do not scale by the MLP input norm's gain")
    p.add_argument("--no-final-norm", action="store_true", help="do not scale by the final norm's gain")
    o.option(p, "--top", find, "top", type=o.at_least(1))
    p.add_argument("--clamp", type=o.finite_float, metavar="VALUE", help="hold a found neuron at VALUE while generating")
    p.add_argument("--prompt", type=o.nonempty_text, help="prompt to steer with --clamp")
    p.add_argument("--neuron", type=_neuron, help="LAYER:NEURON to clamp (default: the top --find result)")
    o.add_max_new_tokens(p, 20)
    o.add_quiet(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import pandas as pd

    import interp
    from interp import neurons
    from interp.errors import UnknownNameError
    from interp.neurons.vectors import WEIGHTS, check_layers, check_neuron, check_weights
    from interp.results.folders import output_folder

    how = o.model_options(args)  # device and dtype checked before anything else
    if args.weights not in WEIGHTS:
        raise UnknownNameError("weight vector", args.weights, WEIGHTS)
    if not args.out and not args.find:
        raise InterpError("nothing to do: pass --out DIR to decode every neuron, or --find WORD")
    if args.clamp is not None and (not args.find or not args.prompt):
        raise InterpError("--clamp needs --find WORD (the concept to measure) and --prompt TEXT")
    if (args.neuron is not None or args.prompt is not None) and args.clamp is None:
        raise InterpError("--neuron and --prompt are for steering: add --clamp VALUE")
    # The output folder (if any) is checked and locked before the model loads.
    with output_folder(args.out, force=args.force, kind="neurons") if args.out else contextlib.nullcontext() as out:
        model = interp.load(args.model, **how)
        check_weights(model, args.weights)
        if args.layers is not None:
            check_layers(model, args.layers)
        if args.neuron is not None:
            check_neuron(model, *args.neuron)
        options = dict(weights=args.weights, apply_input_ln=False if args.no_input_ln else None,
                       apply_final_norm=not args.no_final_norm, layers=args.layers, progress=not args.quiet)
        if out is not None:
            table = neurons.decode(model, k=args.k, **options)  # type: ignore[arg-type]
            paths = neurons.write_report(table, out, f"Feature neurons of {model.name}", k_html=args.html_top_tokens)
    if args.out:
        print(f"{model.name}: {table[['layer', 'neuron']].drop_duplicates().shape[0]} neurons; "
              f"wrote {paths['parquet']} and {paths['html']}")
    if args.find:
        hits = neurons.find(model, args.find, top=args.top, **options)  # type: ignore[arg-type]
        with pd.option_context("display.width", 200, "display.max_colwidth", 60):
            print(hits.assign(concept_token=hits["concept_token"].map(repr)).to_string(index=False))
        if args.clamp is not None:
            if args.neuron is None and not len(hits):
                raise InterpError(f"no neuron decodes to {', '.join(map(repr, args.find))}; pass --neuron LAYER:NEURON")
            layer, neuron = args.neuron or (int(hits.layer[0]), int(hits.neuron[0]))
            r = neurons.clamp_effect(model, layer, neuron, args.clamp, args.prompt, args.find, args.max_new_tokens)
            print(f"\nclamping L{layer}N{neuron} at {args.clamp:g}: p({', '.join(map(repr, r.concept_tokens))}) "
                  f"{r.p_base:.3g} -> {r.p_clamped:.3g} (x{r.ratio:.3g})")
            print(f"  without: {r.prompt!r} + {r.text_base!r}")
            print(f"  with:    {r.prompt!r} + {r.text_clamped!r}")
    return 0
