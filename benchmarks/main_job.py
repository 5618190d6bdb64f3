"""The main job's cost, phase by phase, beside the model's own floor for the same work.

The default head scan (``interp heads MODEL``) does five things; each phase runs in its own
process (so its peak RSS is its own) and, in the same process, the model's floor for that work:

  random     pattern scores on repeated random tokens   floor: plain forwards of the same batches
  text       pattern and n-gram scores on natural text   floor: plain forwards of the same batches
  retrieval  needle tests decoded with arg-max readout   floor: prefill + greedy decoding of the
                                                         same prompts, no observers
  masking    the retrieval masking check, after scoring  floor: one prefill per test + greedy decoding
             as the command scores (its prefills kept)   of each masked condition, no interventions
  induction  the induction ablation check                floor: plain forwards of the same batches

It also times the whole command (``interp heads MODEL --out ...``, defaults, in a subprocess,
``--repeats`` times) and a plain 2,000-token forward, both in the same run, so the main job can
be quoted in 2,000-token forwards. ``--long`` adds retrieval scoring at 4,000 and 8,000 tokens.

    python benchmarks/main_job.py                                  # SmolLM2, everything, 3 repeats
    python benchmarks/main_job.py --model gemma3-270m --repeats 1 --no-command
    python benchmarks/main_job.py --long --models smollm2-135m,gemma3-270m --phases none --no-command
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

RESULTS = Path(__file__).parent / "results"
PHASES = ["random", "text", "retrieval", "masking", "induction"]
CLI = "import sys; from interp.cli import main; sys.exit(main(sys.argv[1:]))"


# -- worker side: one phase in this process ---------------------------------------------------------
def _reset_peak() -> None:
    try:  # Linux: "5" resets the peak resident set size (VmHWM) to the current one
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def _peak_gib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


class Counter:
    """Counts the model's forward calls by kind: prefills (more than one token) and steps."""

    def __init__(self, model: Any):
        self.prefills = self.steps = 0
        self.handle = model.hf.register_forward_pre_hook(self, with_kwargs=True)

    def __call__(self, module: Any, args: tuple, kwargs: dict) -> None:
        ids = kwargs.get("input_ids", args[0] if args else None)
        if ids is not None and ids.shape[-1] > 1:
            self.prefills += 1
        else:
            self.steps += 1


def _timed(fn) -> tuple[float, float, Any]:
    _reset_peak()
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, _peak_gib(), out


def run_phase(model_name: str, phase: str, lengths: tuple[int, ...] | None,
              extra: dict[str, Any] | None = None) -> dict[str, Any]:
    import interp
    from interp.heads import causal, head_scan, retrieval, sequences
    from interp.heads import units as scan_units
    from interp.heads.causal import induction_ablation

    model = interp.load(model_name)
    names = list(head_scan.SCORES)
    retrieval_cfg = {**({"lengths": lengths} if lengths else {}), **(extra or {})} or None
    plan = head_scan.plan_scan(model, names, retrieval=retrieval_cfg)
    settings = plan.settings
    row: dict[str, Any] = {"model": model_name, "phase": phase}

    def plain(batches):
        with torch.no_grad():
            for ids in batches:
                model.hf(input_ids=ids)

    if phase in ("random", "text"):
        units = [u for u in scan_units.pattern_units(settings, names) if u[0] == phase]
        batches = []
        for protocol, length, start in units:
            gen = sequences.repeated_random(model, length, settings["samples"], settings["seed"] + length) \
                if protocol == "random" else sequences.natural_text(model, length, settings["text_samples"], settings["seed"])
            batches.append(gen[start : start + settings["batch_size"]])
        row["seconds"], row["peak_gib"], _ = _timed(lambda: [scan_units.score_pattern_unit(model, u, names, settings)
                                                            for u in units])
        row["floor_seconds"], row["floor_peak_gib"], _ = _timed(lambda: plain(batches))
        row["work"] = f"{len(units)} batches, {sum(b.numel() for b in batches)} tokens"
    elif phase == "retrieval":
        tests = plan.needle_tests or []
        cfg = settings["retrieval"]
        counter = Counter(model)
        row["seconds"], row["peak_gib"], result = _timed(
            lambda: retrieval.retrieval_scores(model, settings=cfg, tests=tests, progress=False))
        row["prefills"], counter.prefills = counter.prefills, 0
        groups = retrieval.test_groups(tests)
        # the floor: the same batches prefilled and greedily decoded, no observers
        row["floor_seconds"], row["floor_peak_gib"], _ = _timed(
            lambda: [retrieval.decode_batch(model, retrieval.prefill(model, [t.prompt_ids for t in g]),
                                            cfg["max_new_tokens"]) for g in groups])
        counter.handle.remove()
        summary = result.summary()
        row["work"] = (f"{len(tests)} tests at {', '.join(map(str, cfg['lengths']))} tokens, "
                       f"{len(groups)} batches of {max(len(g) for g in groups)} at most")
        row["recalled"] = f"{summary['recalled']}/{summary['tests']}"
    elif phase == "masking":
        cfg = settings["retrieval"]
        tests = plan.needle_tests or []
        # scored as the CLI's units score them: the shortest tests' prefills kept for the check
        groups = retrieval.test_groups(tests)
        parts = [part for g in groups for part in retrieval.split_group(
            retrieval.score_tests(model, g, cfg, keep=g[0].length == min(cfg["lengths"])), len(g))]
        result = retrieval.merge_tests([t for g in groups for t in g], parts, cfg, (model.cfg.n_layers, model.cfg.n_heads))
        table = interp.heads.HeadScores.from_arrays({"retrieval": result.scores}, model=model.name)
        table.checks["retrieval_tests"] = result.summary()
        counter = Counter(model)
        row["seconds"], row["peak_gib"], check = _timed(lambda: causal.masking_check(model, table, cfg, progress=False))
        row["prefills"], counter.prefills = counter.prefills, 0
        counter.handle.remove()
        shortest = [t for t in tests if t.length == min(cfg["lengths"])]
        conditions = len(check.get("recall", {})) - 1 if "recall" in check else 0

        def floor():  # the same batches prefilled once and decoded, one row per test and condition
            for g in retrieval.test_groups(shortest):
                start = retrieval.prefill(model, [t.prompt_ids for t in g])
                retrieval.decode_batch(model, start.repeat(conditions), cfg["max_new_tokens"])

        row["floor_seconds"], row["floor_peak_gib"], _ = _timed(floor)
        row["work"] = f"{len(shortest)} tests x {conditions} masked conditions (+ unmasked from scoring)"
        row["tests"] = len(shortest)
    elif phase == "induction":
        table = interp.heads.scan(model, ["induction"], lengths=settings["lengths"], samples=settings["samples"],
                                  causal_checks=False, progress=False)
        k = max(1, min(10, model.cfg.n_total_heads // 10))
        length = max(settings["lengths"])
        ids = sequences.repeated_random(model, length, settings["samples"], 1000)
        row["seconds"], row["peak_gib"], _ = _timed(lambda: induction_ablation(
            model, table, k=k, length=length, samples=settings["samples"]))
        forwards = 2 + 3  # the clean run (which also gives the means), the top heads, 3 random sets
        row["floor_seconds"], row["floor_peak_gib"], _ = _timed(lambda: plain([ids] * forwards))
        row["work"] = f"{forwards} forwards of {tuple(ids.shape)}"
    row["ratio"] = row["seconds"] / row["floor_seconds"] if row.get("floor_seconds") else None
    return row


def forward_2000(model_name: str, repeats: int) -> float:
    import interp
    from interp.heads.sequences import natural_text

    model = interp.load(model_name)
    ids = natural_text(model, 2000, 1, 0)
    times = []
    with torch.no_grad():
        model.hf(input_ids=ids[:, :64])  # warm-up
        for _ in range(repeats):
            start = time.perf_counter()
            model.hf(input_ids=ids)
            times.append(time.perf_counter() - start)
    return statistics.median(times)


# -- driver side --------------------------------------------------------------------------------------
def _worker(args: list[str]) -> Any:
    out = subprocess.run([sys.executable, __file__, "--worker", *args], check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="smollm2-135m")
    p.add_argument("--phases", default=",".join(PHASES), help="comma-separated, or none")
    p.add_argument("--repeats", type=int, default=3, help="runs of the whole command (median)")
    p.add_argument("--no-command", action="store_true", help="skip timing the whole command")
    p.add_argument("--long", action="store_true", help="also retrieval scoring at 4,000 and 8,000 tokens")
    p.add_argument("--long-depths", default="0,0.5,1",
                   help="needle depths of the long runs (each with every shipped needle; default 0,0.5,1)")
    p.add_argument("--long-needles", type=int, default=3, help="shipped needles in the long runs (first N; default 3)")
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--name", default="main_job_cpu")
    p.add_argument("--worker", nargs="*", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker is not None:
        kind, model = args.worker[0], args.worker[1]
        if kind == "forward":
            print(json.dumps({"seconds": forward_2000(model, int(args.worker[2]))}))
        else:
            lengths = tuple(int(x) for x in args.worker[2].split(",")) if len(args.worker) > 2 else None
            extra = json.loads(args.worker[3]) if len(args.worker) > 3 else {}
            print(json.dumps(run_phase(model, kind, lengths, extra)))
        return

    from interp.results.folders import check_output

    check_output(args.out, force=True)  # before any work: a folder that can take the results
    rows, commands = [], []
    for model in args.models.split(","):
        fwd = _worker(["forward", model, "3"])["seconds"]
        print(f"{model}: plain 2,000-token forward {fwd:.2f} s (median of 3)", flush=True)
        if not args.no_command:
            times = []
            for _ in range(args.repeats):
                with tempfile.TemporaryDirectory() as tmp:
                    start = time.perf_counter()
                    subprocess.run([sys.executable, "-c", CLI, "heads", model, "--out", f"{tmp}/r", "--quiet"],
                                   check=True, capture_output=True)
                    times.append(time.perf_counter() - start)
                print(f"  interp heads {model}: {times[-1]:.1f} s", flush=True)
            med = statistics.median(times)
            commands.append({"model": model, "seconds": times, "median": med, "forward_2000": fwd,
                             "in_forwards": med / fwd})
        for phase in [] if args.phases == "none" else args.phases.split(","):
            row = _worker([phase, model])
            row["forward_2000"] = fwd
            rows.append(row)
            print(f"  {phase}: {row['seconds']:.1f} s vs floor {row['floor_seconds']:.1f} s", flush=True)
        if args.long:
            for length in ("4000", "8000"):
                from interp.heads.settings import default_needles

                extra = {"depths": [float(d) for d in args.long_depths.split(",")],
                         "needles": default_needles()[: args.long_needles]}
                row = _worker(["retrieval", model, length, json.dumps(extra)])
                row["phase"] = f"retrieval {length}"
                rows.append(row)
                print(f"  retrieval at {length}: {row['seconds']:.1f} s vs floor {row['floor_seconds']:.1f} s", flush=True)
    write(args.out, args.name, rows, commands)


def write(out: Path, name: str, rows: list[dict[str, Any]], commands: list[dict[str, Any]]) -> None:
    from interp.results.folders import kind_for, output_folder
    from interp.results.protocol import write_json

    env = (f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
           f"{torch.get_num_threads()} threads")
    lines = [f"# The main job, phase by phase\n\n{env}. Produced by `python benchmarks/main_job.py` "
             "(each phase in its own process; the floor is the model's own work for the same inputs).\n"]
    if commands:
        lines += ["| command | runs (s) | median (s) | plain 2,000-token forward (s) | in forwards |", "|---|---|---|---|---|"]
        for c in commands:
            lines.append(f"| `interp heads {c['model']}` | {', '.join(f'{t:.1f}' for t in c['seconds'])} | "
                         f"{c['median']:.1f} | {c['forward_2000']:.2f} | {c['in_forwards']:.1f} |")
        lines.append("")
    if rows:
        lines += ["| model | phase | work | seconds | floor (s) | ratio | peak RSS (GiB) | floor peak (GiB) | prefills | recalled |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for r in rows:
            lines.append(f"| {r['model']} | {r['phase']} | {r['work']} | {r['seconds']:.1f} | {r['floor_seconds']:.1f} | "
                         f"{r['ratio']:.2f} | {r['peak_gib']:.2f} | {r['floor_peak_gib']:.2f} | {r.get('prefills', '')} | "
                         f"{r.get('recalled', '')} |")
    # interp's output folder, written beside other files (logs, other tables), never over them
    with output_folder(out, kind=kind_for(name), force=True) as dest:
        dest.write_text(f"{name}.md", "\n".join(lines) + "\n")
        write_json(dest, f"{name}.json", {"environment": env, "commands": commands, "phases": rows}, end="")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
