"""``interp heads MODEL [MODEL ...] --out DIR``: scan every head and write head-score reports.

Every model's settings and needles, and every output folder, are checked before any scan
starts, so bad input leaves nothing behind. The output folder is locked for the run; an
interrupted run keeps its finished units in ``DIR/.interp-checkpoint`` (per model with several
models) and a rerun of the same command resumes from them.

Checkpoints of one training run (``interp heads 'run/checkpoint-*' --out DIR``: several folders,
each with a step in its name or a ``trainer_state.json``, or any folders with ``--timeline``) are
scanned in step order, one subfolder each, and ``DIR`` gets ``timeline.parquet`` (step, layer,
head, score, value), ``timeline.json`` and ``timeline.html`` (chosen scores against step). Their
finished units stay in ``DIR/.interp-checkpoint`` until the whole timeline is written, so an
interrupted timeline resumes without rescanning the checkpoints it finished.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from interp.cli import options as o
from interp.errors import InterpError

if TYPE_CHECKING:
    from interp.heads.table import HeadScores


def register(sub: argparse._SubParsersAction) -> None:
    from interp.heads.settings import SCAN_DEFAULTS, SCORES, STREAMING_DEFAULTS, RetrievalSettings

    p = sub.add_parser("heads", help="score every attention head and write reports")
    o.add_model(p, several=True)
    o.add_out(p, what="report folder (one subfolder per model if several)")
    p.add_argument("--scores", default=list(SCORES), type=o.names_list,
                   help=f"comma-separated, from: {', '.join(SCORES)} (default: all)")
    # Defaults are those of scan and RetrievalSettings, read from where they are written.
    p.add_argument("--lengths", default=o.default(SCAN_DEFAULTS, "lengths"), type=o.int_list(1),
                   help="repeated random sequence lengths (default: %(default)s)")
    p.add_argument("--samples", default=o.default(SCAN_DEFAULTS, "samples"), type=o.at_least(1),
                   help="random sequences per length (default: %(default)s)")
    p.add_argument("--text-tokens", default=o.default(SCAN_DEFAULTS, "text_tokens"), type=o.at_least(1),
                   help="tokens per natural-text window (default: %(default)s)")
    p.add_argument("--text-samples", default=o.default(SCAN_DEFAULTS, "text_samples"), type=o.at_least(1),
                   help="natural-text windows (default: %(default)s)")
    p.add_argument("--retrieval-lengths", default=o.default(RetrievalSettings, "lengths"), type=o.int_list(1),
                   help="needle-in-a-haystack lengths (default: %(default)s)")
    p.add_argument("--retrieval-depths", default=o.default(RetrievalSettings, "depths"), type=o.unit_interval_list,
                   help="needle depths in the haystack, 0: start, 1: end (default: %(default)s)")
    p.add_argument("--mask-k", default=o.default(RetrievalSettings, "mask_k"), type=o.at_least(1),
                   help="heads masked in the retrieval masking check (default: %(default)s)")
    p.add_argument("--sink", default=o.default(STREAMING_DEFAULTS, "sink"), type=o.at_least(0),
                   help="streaming score and exported pattern: sink keys kept by a streaming head (default: %(default)s)")
    p.add_argument("--window", default=o.default(STREAMING_DEFAULTS, "window"), type=o.at_least(1),
                   help="streaming score and exported pattern: recent keys kept by a streaming head "
                        "(default: %(default)s)")
    p.add_argument("--streaming-tokens", default=None, type=o.at_least(2),
                   help=f"length of the natural text the streaming score reads (default: {STREAMING_DEFAULTS['tokens']}, "
                        "or the model's context window if shorter)")
    p.add_argument("--export", default=[], type=o.names_list,
                   help="also write, beside each report: kv-pattern (kv_pattern/full_attention_heads.tsv and "
                        "config.json in DuoAttention's layout, which kvpress's DuoAttentionPress reads; needs the "
                        "retrieval score)")
    o.add_seed(p)
    p.add_argument("--exclude-bos", action="store_true", help="leave the first token out of pattern scores")
    p.add_argument("--exclude-current", action="store_true", help="leave each query's own token out")
    p.add_argument("--no-causal-checks", action="store_true", help="skip the ablation checks")
    p.add_argument("--ray", nargs="?", const="auto", metavar="ADDRESS",
                   help="run the scan's units on Ray: auto (a local cluster started for this run) or the address of "
                        "a running cluster; needs interp[ray]")
    p.add_argument("--timeline", action="store_true",
                   help="the models are checkpoints of one run: scan them in step order (from each folder's name "
                        "or trainer_state.json) and write timeline.parquet and timeline.html; implied when there "
                        "are several folders and each has a step")
    p.add_argument("--timeline-scores", default=None, type=o.names_list,
                   help="comma-separated scores drawn against step in timeline.html (default: prev_token, "
                        "duplicate, induction and retrieval, where computed)")
    o.add_quiet(p)
    p.set_defaults(run=run)


def _folder_name(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def run(args: argparse.Namespace) -> int:
    import interp
    from interp.heads import sweep
    from interp.heads.head_scan import check_scores
    from interp.heads.report import write_index
    from interp.results.folders import check_output, output_folder

    how = o.model_options(args)  # device and dtype checked before anything else
    names = check_scores(args.scores)
    _check_exports(args.export, names)
    steps, figure_scores = _timeline(args, names)
    settings = dict(
        lengths=args.lengths, samples=args.samples, text_tokens=args.text_tokens, text_samples=args.text_samples,
        seed=args.seed, exclude_bos=args.exclude_bos, exclude_current=args.exclude_current,
        causal_checks=not args.no_causal_checks,
        retrieval={"lengths": tuple(args.retrieval_lengths), "depths": tuple(args.retrieval_depths),
                   "mask_k": args.mask_k},
        streaming={"sink": args.sink, "window": args.window, "tokens": args.streaming_tokens},
    )

    def load(spec: str) -> interp.Model:
        return interp.load(spec, **how)

    # The output folder is locked first, so a second run on it fails at once; then every
    # model's settings and needles are checked before any unit runs (a folder this run created
    # is removed again if that fails). Each model's finished units are kept in the folder's
    # checkpoint until every report is written, so a rerun resumes.
    several = len(args.models) > 1 or steps is not None
    if args.ray is not None:  # Ray installed and the cluster answering, before anything is written
        sweep.require_ray()
        if args.ray != "auto":
            sweep.check_address(args.ray)
    with output_folder(args.out, force=args.force, kind="heads") as top:
        def subfolder(model: interp.Model) -> str:
            sub = _folder_name(model.name) if several else ""
            if sub:
                check_output(args.out / sub, force=args.force)
            return sub

        models = sweep.plan_sweep(args.models, names, settings, load, lambda sub: top.checkpoint / sub if sub
                                  else top.checkpoint, subfolder)

        def write(m: sweep.SweepModel, scores: HeadScores) -> None:
            if several:
                with top.subfolder(m.folder, force=args.force) as dest:
                    scores.save(dest)
                    _exports(args, scores, dest)
            else:
                scores.save(top)
                _exports(args, scores, top)
            _summary(m.name, args.out / m.folder, scores)

        reports = sweep.run_sweep(models, load, ray=args.ray, load_options=how, progress=not args.quiet,
                                  on_report=write)
        if several:
            index = write_index({m.name: Path(m.folder) for m in models}, top)
            sweep.write_heads_table(top, models, reports)
        if steps is not None:
            from interp.heads.timeline import Timeline

            timeline = Timeline.from_reports([(steps[m.spec], m.folder, r) for m, r in zip(models, reports, strict=True)],
                                             figure_scores=figure_scores, settings={"scores": names, **settings})
            timeline.save(top)
    if several:
        print(f"index: {index}")
    if steps is not None:
        print(f"timeline: {args.out / 'timeline.parquet'} ({len(models)} checkpoints, steps "
              f"{min(steps.values())}..{max(steps.values())}); figure: {args.out / 'timeline.html'}")
    return 0


def _check_exports(exports: list[str], names: list[str]) -> None:
    from interp.heads.kv_export import EXPORTS

    for name in exports:
        if name not in EXPORTS:
            raise InterpError(f"unknown export {name!r}; valid exports: {', '.join(EXPORTS)}")
    if "kv-pattern" in exports and "retrieval" not in names:
        raise InterpError("--export kv-pattern writes the retrieval scores per kv head: add retrieval to --scores")


def _exports(args: argparse.Namespace, scores: HeadScores, dest) -> None:
    if "kv-pattern" in args.export:
        from interp.heads.kv_export import write_kv_pattern

        with dest.subfolder("kv_pattern", force=args.force) as kv:
            write_kv_pattern(scores, kv, sink=args.sink, window=args.window)


def _timeline(args: argparse.Namespace, names: list[str]) -> tuple[dict[str, int] | None, list[str] | None]:
    """Expand glob patterns among the models; when they are checkpoints of a run (see the module
    doc), order them by step: returns ``{spec: step}`` and the scores the figure draws (checked
    against those computed), else ``(None, None)``."""
    from interp.heads.timeline import check_figure_scores, checkpoint_steps, expand_globs, score_names

    args.models = expand_globs(args.models)
    ordered = checkpoint_steps(args.models, required=args.timeline)
    if ordered is None or (len(ordered) < 2 and not args.timeline):
        if args.timeline_scores:
            raise InterpError("--timeline-scores draws a timeline of checkpoints: give several checkpoint folders "
                              "(run/checkpoint-*) or --timeline")
        return None, None
    args.models = [spec for _, spec in ordered]
    return {spec: step for step, spec in ordered}, check_figure_scores(args.timeline_scores, score_names(names))


def _summary(name: str, folder: Path, scores: HeadScores) -> None:
    from interp.core.sites import head_label

    print(f"{name}: wrote {folder / 'report.html'}")
    for score in scores.scores:
        top = scores.top(score, 3)
        print(f"  {score:<16} top heads: " + ", ".join(f"{head_label(r.layer, r.head)} {r.value:.2f}" for r in top.itertuples()))
