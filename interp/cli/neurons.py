"""``interp neurons MODEL --out DIR`` / ``--find WORD [--clamp VALUE --prompt TEXT]``: feature neurons.

``--out`` decodes every MLP neuron through the LM head and writes ``neurons.parquet`` and a
searchable ``neurons.html``; ``--find`` prints the neurons that decode to a concept and,
with ``--clamp``, steers generation from ``--prompt`` with the top one (or ``--neuron L:N``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from interp.errors import InterpError, UnknownNameError

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def _neuron(text: str) -> tuple[int, int]:
    try:
        layer, neuron = text.upper().lstrip("L").replace("N", ":").split(":")
        return int(layer), int(neuron)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LAYER:NEURON such as 12:345, got {text!r}") from None


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("neurons", help="decode MLP neurons through the LM head; find and clamp concept neurons")
    p.add_argument("model", help="bundled name, local HF folder, .gguf file or hub id")
    p.add_argument("--out", type=Path, help="folder for neurons.parquet and neurons.html")
    p.add_argument("--find", nargs="+", metavar="WORD", help="concept words (a leading space means that token only)")
    p.add_argument("--weights", default="up", help="up (default), gate or down")
    p.add_argument("--k", type=int, default=10, help="top tokens kept per neuron in neurons.parquet")
    p.add_argument("--html-k", type=int, default=5, help="top tokens per neuron shown in neurons.html")
    p.add_argument("--layers", type=_ints, help="comma-separated layers (default: all)")
    p.add_argument("--no-input-ln", action="store_true", help="do not scale by the MLP input norm's gain")
    p.add_argument("--no-final-norm", action="store_true", help="do not scale by the final norm's gain")
    p.add_argument("--top", type=int, default=20, help="rows printed by --find")
    p.add_argument("--clamp", type=float, metavar="VALUE", help="hold a found neuron at VALUE while generating")
    p.add_argument("--prompt", help="prompt to steer with --clamp")
    p.add_argument("--neuron", type=_neuron, help="LAYER:NEURON to clamp (default: the top --find result)")
    p.add_argument("--max-new-tokens", type=int, default=20)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32", help=f"one of {', '.join(DTYPES)}")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import pandas as pd

    import interp
    from interp import neurons

    if args.dtype not in DTYPES:
        raise UnknownNameError("dtype", args.dtype, list(DTYPES))
    if not args.out and not args.find:
        raise InterpError("nothing to do: pass --out DIR to decode every neuron, or --find WORD")
    if args.clamp is not None and (not args.find or not args.prompt):
        raise InterpError("--clamp needs --find WORD (the concept to measure) and --prompt TEXT")
    model = interp.load(args.model, device=args.device, dtype=DTYPES[args.dtype])
    options = dict(weights=args.weights, apply_input_ln=False if args.no_input_ln else None,
                   apply_final_norm=not args.no_final_norm, layers=args.layers, progress=not args.quiet)
    if args.out:
        table = neurons.decode(model, k=args.k, **options)  # type: ignore[arg-type]
        paths = neurons.write_report(table, args.out, f"Feature neurons of {model.name}", k_html=args.html_k)
        print(f"{model.name}: {table[['layer', 'neuron']].drop_duplicates().shape[0]} neurons; wrote {paths['parquet']} and {paths['html']}")
    if args.find:
        hits = neurons.find(model, args.find, top=args.top, **options)  # type: ignore[arg-type]
        with pd.option_context("display.width", 200, "display.max_colwidth", 60):
            print(hits.assign(concept_token=hits["concept_token"].map(repr)).to_string(index=False))
        if args.clamp is not None:
            layer, neuron = args.neuron or (int(hits.layer[0]), int(hits.neuron[0]))
            r = neurons.steer(model, layer, neuron, args.clamp, args.prompt, args.find, args.max_new_tokens)
            print(f"\nclamping L{layer}N{neuron} at {args.clamp:g}: p({', '.join(map(repr, r.concept_tokens))}) "
                  f"{r.p_base:.3g} -> {r.p_clamped:.3g} (x{r.ratio:.3g})")
            print(f"  without: {r.prompt!r} + {r.text_base!r}")
            print(f"  with:    {r.prompt!r} + {r.text_clamped!r}")
    return 0
