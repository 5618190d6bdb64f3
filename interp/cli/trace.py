"""``interp trace MODEL [PROMPT]``: run one traced forward pass and show what it computed."""

from __future__ import annotations

import argparse

from interp.cli import options as o

DEFAULT_PROMPT = "The capital of France is"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("trace", help="trace one prompt: continuation and logit lens by layer")
    o.add_model(p)
    p.add_argument("prompt", nargs="?", default=DEFAULT_PROMPT, type=o.nonempty_text,
                   help=f"text to run (default {DEFAULT_PROMPT!r})")
    o.add_max_new_tokens(p, 8)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import interp
    from interp.core.lens import logit_lens

    how = o.model_options(args)  # device and dtype checked before anything else
    model = interp.load(args.model, **how)
    print(model)
    print(f"prompt: {args.prompt!r}")
    print(f"greedy continuation: {model.generate(args.prompt, max_new_tokens=args.max_new_tokens)[0]!r}\n")
    lens = logit_lens(model, args.prompt, k=1)
    lens = lens.drop(columns=["rank"]).rename(columns={"token": "top token", "prob": "p"})
    print("logit lens at the last position (resid_post of each layer -> final norm -> unembed):")
    print(lens.to_string(index=False, float_format=lambda x: f"{x:.3f}"))
    return 0
