"""Neuron-decode benchmark: every up-projection neuron of SmolLM2 through the LM head, on this CPU.

SmolLM2-135M has 30 layers × 1536 neurons = 46,080 neurons, d_model 576 and 49,152 tokens:
46,080 × 49,152 × 576 × 2 ≈ 2.6 TFLOP of matrix products. Each method runs in its own
process (so its peak RSS is its own) and is timed ``--repeats`` times (median):

  kernel    interp.kernels.decode_topk on all 46,080 vectors at once (vectors prepared beforehand)
  decode    interp.neurons.decode(model, k=10): vectors, norm gains, kernel, token strings, DataFrame
  find      interp.neurons.find(model, " dog"): decode with k=50 plus exact concept scores
  dense     per layer, the full [1536 × 49,152] softmax and its top-k (the straightforward way)

The script checks that every method finds the same top token for every neuron.

    python benchmarks/neuron_decode.py                      # all methods, 3 repeats
    python benchmarks/neuron_decode.py --methods decode --repeats 1
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

MODEL = "smollm2-135m"
METHODS = ["kernel", "decode", "find", "dense"]
RESULTS = Path(__file__).parent / "results"
K = 10


def _peak_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def _vectors(model) -> torch.Tensor:
    from interp.neurons import decoding_vectors

    return torch.cat([decoding_vectors(model, layer, "up") for layer in range(model.cfg.n_layers)])


def run_kernel(model, state):
    from interp.kernels import decode_topk

    return decode_topk(state["vectors"], state["unembed"], K).index[:, 0]


def run_decode(model, state):
    from interp.neurons import decode

    df = decode(model, k=K, progress=False)
    return torch.as_tensor(df[df["rank"] == 1]["token_id"].to_numpy())


def run_find(model, state):
    from interp.neurons import find

    find(model, " dog", top=None, progress=False)
    return None


def run_dense(model, state):
    u, n = state["unembed"], model.cfg.d_mlp
    tops = []
    for layer in range(model.cfg.n_layers):
        probs = torch.softmax(state["vectors"][layer * n : (layer + 1) * n] @ u.T, dim=-1)
        tops.append(probs.topk(K).indices[:, 0])
    return torch.cat(tops)


def worker(method: str, repeats: int) -> None:
    import interp
    from interp.neurons.vectors import unembedding

    model = interp.load(MODEL)
    state = {"unembed": unembedding(model)}
    if method in ("kernel", "dense"):
        state["vectors"] = _vectors(model)
    fn = globals()[f"run_{method}"]
    times, top = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        top = fn(model, state)
        times.append(time.perf_counter() - start)
    print(json.dumps({
        "method": method, "times": times, "median_s": statistics.median(times), "peak_rss_gib": _peak_gib(),
        "top1": None if top is None else top.tolist(),
    }))


def _run(method: str, repeats: int) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--worker", method, "--repeats", str(repeats)],
                          capture_output=True, text=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        why = (proc.stderr.strip().splitlines() or [f"exit code {proc.returncode}"])[-1][:200]
        return {"method": method, "status": f"failed: {why}"}
    return {**json.loads(lines[-1]), "status": "ok"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args.worker, args.repeats)

    from interp.results.folders import check_output, output_folder
    from interp.results.protocol import write_json

    check_output(RESULTS, force=True)  # before any work: a folder that can take the results
    rows = [_run(m, args.repeats) for m in args.methods.split(",")]
    ref = next((r["top1"] for r in rows if r.get("top1")), None)
    n = 46080
    header = (f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}, float32; "
              f"{MODEL}: {n:,} up-projection neurons × 49,152 tokens, top-{K}")
    lines = ["# Decoding every SmolLM2 neuron on the CPU", "", header, "",
             "| method | status | median time (s) | runs (s) | neurons / s | peak RSS (GiB) | same top-1 as first |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        if r["status"] != "ok":
            lines.append(f"| {r['method']} | {r['status']} | — | — | — | — | — |")
            continue
        same = "—" if r.get("top1") is None or ref is None else \
            f"{sum(a == b for a, b in zip(r['top1'], ref, strict=True)) / len(ref):.4%}"
        runs = ", ".join(f"{t:.1f}" for t in r["times"])
        lines.append(f"| {r['method']} | ok | {r['median_s']:.1f} | {runs} | {n / r['median_s']:,.0f} | "
                     f"{r['peak_rss_gib']:.2f} | {same} |")
    lines += ["", "`kernel` excludes reading the weights and applying the norm gains (done once beforehand); "
              "`decode` and `find` are end to end from a loaded model. Floor for `decode`: under 60 s.", "",
              "At this size the matrix products bound every method, so chunking buys memory, not speed: `dense` "
              "holds a layer's [1536 × 49,152] scores and their softmax (0.6 GB); the kernel holds "
              "[1024 × 49,152] scores. For Llama-3.1-8B one layer's dense scores would be 14,336 × 128,256 "
              "floats (7.3 GB), while the kernel's stay at 1024 × 65,536 (0.27 GB)."]
    text = "\n".join(lines) + "\n"
    print(text)
    for r in rows:
        r.pop("top1", None)
    # interp's output folder, written beside other files (logs, other tables), never over them
    with output_folder(RESULTS, kind="neuron_decode_cpu", force=True) as dest:
        dest.write_text("neuron_decode_cpu.md", text)
        write_json(dest, "neuron_decode_cpu.json", {"header": header, "rows": rows}, end="")


if __name__ == "__main__":
    main()
