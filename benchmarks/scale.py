"""How an all-heads scan grows with tokens, and what a full 8B or 70B scan would cost.

Measures, each point in its own process (so peak RSS is its own), the kernel scan of every head
(``interp.heads.kernel_stats`` with the previous-token and induction rules, as ``interp heads`` runs it)
against tokens, on the bundled models and on random-weight models with the layer shapes of
Llama-3.1-8B (32 query / 8 kv heads, d_head 128, d_model 4096, d_mlp 14336) and Llama-3.1-70B
(64 / 8, d_model 8192, d_mlp 28672), one or two layers so they fit here; HF eager attention with
``output_attentions`` beside it where it fits, and where it does not, the memory it would need
(heads x tokens^2 x 4 bytes per layer, float32). Fits the per-layer time ``a + b*t + c*t^2`` and
extrapolates to the full models at 8k-128k tokens, on this CPU and on GPUs from their published
throughput (the assumptions are printed with the table).

    python benchmarks/scale.py                       # the committed table
    python benchmarks/scale.py --quick --out scale_quick  # a few small points
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

RESULTS = Path(__file__).parent / "results"
GIB = 2**30

# Layer shapes (Meta's published configs) and the full models' depths.
SHAPES = {
    "llama3.1-8b": dict(hidden_size=4096, intermediate_size=14336, num_attention_heads=32, num_key_value_heads=8,
                        n_layers_full=32, params_full=8.03e9),
    "llama3.1-70b": dict(hidden_size=8192, intermediate_size=28672, num_attention_heads=64, num_key_value_heads=8,
                         n_layers_full=80, params_full=70.6e9),
}
# Peak dense bfloat16 tensor-core throughput and memory bandwidth (vendor data sheets), and the share
# of the peak a long-context prefill reaches (an assumption, stated in the table).
GPUS = {"A100-80GB": (312e12, 2.0e12, 80), "H100-SXM": (989e12, 3.35e12, 80), "H200": (989e12, 4.8e12, 141)}
MFU = 0.4


# -- worker side -------------------------------------------------------------------------------------
def _peak_gib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 2**20
    return float("nan")


def _model(kind: str, layers: int, tokens: int):
    import torch

    import interp

    if kind in SHAPES:
        from transformers import AutoModelForCausalLM, LlamaConfig

        s = {k: v for k, v in SHAPES[kind].items() if not k.endswith("_full")}
        cfg = LlamaConfig(**s, num_hidden_layers=layers, vocab_size=1024, max_position_embeddings=max(tokens, 131072),
                          rope_theta=500000.0)
        torch.manual_seed(0)
        hf = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32, attn_implementation="sdpa").eval()

        class Tok:  # token ids only
            pad_token = eos_token = "<pad>"
            pad_token_id = eos_token_id = 0
            padding_side = "left"

        return interp.Model(hf, Tok(), name=kind)
    return interp.load(kind)


def measure(kind: str, method: str, tokens: int, layers: int) -> dict[str, Any]:
    import torch

    from interp.heads.kernel_stats import head_stats

    model = _model(kind, layers, tokens)
    ids = torch.randint(1, min(model.cfg.d_vocab, 1000), (1, tokens), generator=torch.Generator().manual_seed(0))
    base = _peak_gib()
    start = time.perf_counter()
    with torch.no_grad():
        if method == "interp":
            head_stats(model, ids, rules=["prev", "ngram1"])
        else:  # eager attention with every pattern materialised, as peers read them
            model.hf.set_attn_implementation("eager")
            model.hf(input_ids=ids, output_attentions=True)
    seconds = time.perf_counter() - start
    weights = sum(p.numel() * p.element_size() for p in model.hf.parameters()) / GIB
    kv = 2 * model.cfg.n_layers * model.cfg.n_kv_heads * model.cfg.d_head * tokens * 4 / GIB
    return {"model": kind, "method": method, "tokens": tokens, "layers": model.cfg.n_layers, "seconds": seconds,
            "peak_gib": _peak_gib(), "loaded_gib": base, "weights_gib": weights, "kv_gib": kv,
            "eager_need_gib_per_layer": model.cfg.n_heads * tokens**2 * 4 / GIB}


# -- driver side -------------------------------------------------------------------------------------
def _run(kind: str, method: str, tokens: int, layers: int, limit_gib: float) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--worker", kind, method, str(tokens), str(layers)]
    prefix = f"ulimit -v {int(limit_gib * 2**20)}; " if method == "eager" else ""
    out = subprocess.run(["bash", "-c", prefix + " ".join(cmd)], capture_output=True, text=True)
    if out.returncode != 0:
        need = None
        return {"model": kind, "method": method, "tokens": tokens, "layers": layers, "error": (out.stderr.strip()
                .splitlines() or ["failed"])[-1][:120], "eager_need_gib_per_layer": need}
    return json.loads(out.stdout.strip().splitlines()[-1])


def fit(rows: list[dict[str, Any]]) -> tuple[float, float, float]:
    """Least-squares per-layer ``a + b t + c t^2`` (seconds) with non-negative c."""
    t = np.array([r["tokens"] for r in rows], float)
    y = np.array([r["seconds"] / r["layers"] for r in rows], float)
    a, b, c = np.linalg.lstsq(np.stack([np.ones_like(t), t, t**2], 1), y, rcond=None)[0]
    return float(a), float(b), max(float(c), 0.0)


def gpu_seconds(kind: str, tokens: int, peak: float) -> float:
    """A full scan on a GPU: 2 FLOPs per parameter per token (projections and MLPs) plus the
    attention scores the kernels compute (q.k over the causal half: 2 t^2 d per layer), at MFU."""
    s = SHAPES[kind]
    flops = 2 * s["params_full"] * tokens + s["n_layers_full"] * 2 * tokens**2 * s["hidden_size"]
    return flops / (peak * MFU)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="a few small points only")
    p.add_argument("--limit-gib", type=float, default=20.0, help="address-space limit for eager runs")
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--worker", nargs=4, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        kind, method, tokens, layers = args.worker
        print(json.dumps(measure(kind, method, int(tokens), int(layers))))
        return
    plan = ([("llama3.1-8b", 2, [1024, 2048]), ("smollm2-135m", 30, [1024, 2048])] if args.quick else
            [("llama3.1-8b", 2, [1024, 4096, 8192, 16384]), ("llama3.1-70b", 1, [1024, 4096, 8192]),
             ("smollm2-135m", 30, [1024, 4096, 8192]), ("gemma3-270m", 18, [1024, 16384])])
    from interp.results.folders import check_output

    check_output(args.out, force=True)  # before any work: a folder that can take the results
    rows = []
    for kind, layers, tokens_list in plan:
        for tokens in tokens_list:
            for method in ("interp", "eager"):
                need = (SHAPES[kind]["num_attention_heads"] if kind in SHAPES else 0) * tokens**2 * 4 / GIB
                if method == "eager" and (tokens > 8192 or need > args.limit_gib / 2):
                    rows.append({"model": kind, "method": method, "tokens": tokens, "layers": layers,
                                 "skipped": "would not fit", "eager_need_gib_per_layer": need})
                    continue
                row = _run(kind, method, tokens, layers, args.limit_gib)
                rows.append(row)
                print(json.dumps(row), flush=True)
    write(args.out, rows)


def write(out: Path, rows: list[dict[str, Any]]) -> None:
    from interp.results.folders import output_folder
    from interp.results.protocol import write_json

    env = f"{platform.machine()}, {os.cpu_count()} cores, float32 on the CPU"
    lines = ["# Scan cost against tokens, and extrapolated to full models", "",
             f"Measured by `python benchmarks/scale.py` ({env}); each point in its own process. `interp`: every "
             "head's previous-token and induction statistics (the kernels inside one forward, stopped after the last "
             "layer's attention); `eager`: HF eager attention with `output_attentions`. Random-weight models have the "
             "layer shapes of Llama-3.1-8B/70B and 2/1 layers; times are per model as built, memory is peak RSS.", "",
             "| model | layers | tokens | method | seconds | peak RSS (GiB) | weights (GiB) | K+V (GiB) | eager would need per layer (GiB) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "seconds" in r:
            lines.append(f"| {r['model']} | {r['layers']} | {r['tokens']} | {r['method']} | {r['seconds']:.1f} | "
                         f"{r['peak_gib']:.2f} | {r['weights_gib']:.2f} | {r['kv_gib']:.3f} | "
                         f"{r['eager_need_gib_per_layer']:.1f} |")
        else:
            lines.append(f"| {r['model']} | {r['layers']} | {r['tokens']} | {r['method']} | "
                         f"{r.get('skipped') or r.get('error')} | | | | {r.get('eager_need_gib_per_layer') or 0:.1f} |")
    lines += ["", "## Per-layer fit and extrapolation", ""]
    for kind in SHAPES:
        pts = [r for r in rows if r["model"] == kind and r["method"] == "interp" and "seconds" in r]
        if len(pts) < 3:
            continue
        a, b, c = fit(pts)
        s = SHAPES[kind]
        lines += [f"**{kind}** per layer on this CPU: {a:.3g} + {b:.3g}·t + {c:.3g}·t² seconds "
                  f"(slope between the two longest points: {(pts[-1]['seconds'] - pts[-2]['seconds']) / pts[-1]['layers'] / (pts[-1]['tokens'] - pts[-2]['tokens']) * 1e3:.3g} s per 1k tokens per layer).", "",
                  "| tokens | CPU, full model (h) | " + " | ".join(f"{g} (s)" for g in GPUS) + " | bf16 weights (GiB) | "
                  "K+V bf16, all layers (GiB) | GPUs needed (80 GB) | eager patterns per layer (GiB) |",
                  "|---|---|" + "---|" * len(GPUS) + "---|---|---|---|"]
        for tokens in (8192, 32768, 131072):
            cpu_h = s["n_layers_full"] * (a + b * tokens + c * tokens**2) / 3600
            weights = s["params_full"] * 2 / GIB
            kv = 2 * s["n_layers_full"] * s["num_key_value_heads"] * 128 * tokens * 2 / GIB
            act = tokens * s["intermediate_size"] * 2 * 3 / GIB  # one layer's MLP activations, bf16
            gpus = int(np.ceil((weights + act + kv / s["n_layers_full"]) / (80 * 0.9)))
            lines.append(f"| {tokens} | {cpu_h:.1f} | " + " | ".join(f"{gpu_seconds(kind, tokens, g[0]):.1f}" for g in
                                                                       GPUS.values())
                         + f" | {weights:.0f} | {kv:.1f} | {gpus} | {s['num_attention_heads'] * tokens**2 * 4 / GIB:.0f} |")
        lines.append("")
    lines += ["Assumptions: GPU time = (2 x parameters x tokens + layers x 2 x tokens² x d_model) FLOPs at "
              f"{int(MFU * 100)}% of the dense bf16 peak (A100 312, H100 989, H200 989 TFLOP/s); the scan never "
              "holds more than one layer's activations and its keys (the kernels reduce q·k block by block), so "
              "memory is the bf16 weights plus one layer's activations; a model larger than one GPU is split by "
              "layers (`interp.load(..., device_map='auto')`) and its time does not shrink, while N GPUs each "
              "holding a replica run N units (sequences, needle tests) at once through `--ray`: the sweep's time "
              "divides by N."]
    # interp's output folder, written beside other files (logs, other tables), never over them
    with output_folder(out, kind="scale_cpu", force=True) as dest:
        dest.write_text("scale_cpu.md", "\n".join(lines) + "\n")
        write_json(dest, "scale_cpu.json", rows, end="")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
