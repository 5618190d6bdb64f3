"""``interp trace MODEL [PROMPT]``: run one traced forward pass and show what it computed."""

from __future__ import annotations

import argparse

DEFAULT_PROMPT = "The capital of France is"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("trace", help="trace one prompt: continuation and logit lens by layer")
    p.add_argument("model", help="bundled name, local HF folder, .gguf file or hub id")
    p.add_argument("prompt", nargs="?", default=DEFAULT_PROMPT)
    p.add_argument("--new-tokens", type=int, default=8, help="greedy tokens to generate (default 8)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import interp
    from interp.lens import logit_lens

    model = interp.load(args.model)
    print(model)
    print(f"prompt: {args.prompt!r}")
    print(f"greedy continuation: {model.generate(args.prompt, max_new_tokens=args.new_tokens)[0]!r}\n")
    lens = logit_lens(model, args.prompt, k=1)
    lens = lens.drop(columns=["rank"]).rename(columns={"token": "top token", "prob": "p"})
    print("logit lens at the last position (resid_post of each layer -> final norm -> unembed):")
    print(lens.to_string(index=False, float_format=lambda x: f"{x:.3f}"))
    return 0
