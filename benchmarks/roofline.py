"""Roofline of the Triton attention-statistics kernels, and what a head scan should cost on one GPU.

Per call (one layer), as functions of batch b, query heads H, kv heads Hkv, positions P (every
row, causal) and head size d, for the statistics kernel with a block configuration
(BLOCK_M (row, head) pairs, BLOCK_N keys, W warps; R = BLOCK_M // G rows per program):

  iterations   I = b·Hkv · Σ_i ceil(min((i+1)·R, P) / BLOCK_N)   (i over the P/R row blocks; key blocks a
               causal program visits)
  HBM bytes    b·H·P·d·s (q) + b·Hkv·P·d·s (k) + b·P·4·(tokens, rows) + b·H·P·4·(1 + rules) (lse, masses)
  MMA FLOPs    I · BLOCK_M · BLOCK_N · DP · 2   (×3 for float32: three TF32 products)
  exp2         I · (MUFU instructions per warp and key block) · W · 32
  instructions I · (SASS instructions per warp and key block) · W   (warp instructions issued)

The instruction and MUFU counts per key block come from the compiled kernel's SASS (compiled here
for sm_80 and sm_90, as in benchmarks/triton_aot.py). Predicted time is the largest of four roofs:
HBM bytes / bandwidth, MMA FLOPs / tensor-core throughput, exp2 / special-function throughput
(16 per clock per SM), warp instructions / issue rate (4 per clock per SM). The same roofs give a
plain flash-attention forward of the same shape (4·d FLOPs and one exp per visible score; q, k, v
read and o written once).

The torch path (the CPU implementation behind the same signature) is measured on this machine at
small lengths and extrapolated with a fit a·P² + b·P.

    python benchmarks/roofline.py             # writes benchmarks/results/roofline.md
    python benchmarks/roofline.py --quick     # smaller CPU measurement, no file unless --out
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results"
sys.path.insert(0, str(Path(__file__).parent))

# Published figures (dense, no sparsity). clock: the one implied by the tensor-core figure
# (FLOPs / (SMs x FLOPs per clock per SM: 2048 on A100, 4096 on H100/H200)).
DEVICES: dict[str, dict[str, Any]] = {
    "A100 SXM4 80GB": dict(
        arch=80, hbm=2.039e12, bf16=312e12, tf32=156e12, sms=108, clock=312e12 / (108 * 2048),
        source="NVIDIA A100 Tensor Core GPU datasheet: 2,039 GB/s HBM2e, 312 TFLOPS BF16/FP16 and 156 TFLOPS TF32 "
               "tensor (dense); NVIDIA A100 Tensor Core GPU Architecture whitepaper: 108 SMs"),
    "H100 SXM5 80GB": dict(
        arch=90, hbm=3.35e12, bf16=989e12, tf32=494e12, sms=132, clock=989e12 / (132 * 4096),
        source="NVIDIA H100 Tensor Core GPU datasheet: 3.35 TB/s HBM3, 989 TFLOPS BF16/FP16 and 494 TFLOPS TF32 "
               "tensor (dense); NVIDIA H100 Tensor Core GPU Architecture whitepaper: 132 SMs (SXM5)"),
    "H200 SXM 141GB": dict(
        arch=90, hbm=4.8e12, bf16=989e12, tf32=494e12, sms=132, clock=989e12 / (132 * 4096),
        source="NVIDIA H200 Tensor Core GPU datasheet: 4.8 TB/s HBM3e, 989 TFLOPS BF16/FP16 and 494 TFLOPS TF32 "
               "tensor (dense); same GH100 die as H100 SXM5 (132 SMs)"),
}
MUFU_PER_CLOCK = 16  # exp2 results per clock per SM, compute capability 8.0 and 9.0 (CUDA C Programming Guide)
ISSUE_PER_CLOCK = 4  # warp instructions per clock per SM (four schedulers)

# Llama-3.1-8B: 32 layers, 32 query / 8 kv heads, head size 128, 8.0e9 parameters, bfloat16.
MODEL_8B = dict(name="Llama-3.1-8B shape", layers=32, heads=32, kv_heads=8, d=128, params=8.0e9)
SCAN_RULES = ("bos", "dup", "ngram1", "ngram2", "ngram3", "ngram4", "prev", "self")  # the scan's natural-text set


def iterations(p: int, rows_per_program: int, block_n: int, causal: bool = True) -> int:
    """Key blocks visited by all programs of one (batch item, kv head), every row a query."""
    if not causal:
        return math.ceil(p / rows_per_program) * math.ceil(p / block_n)
    return sum(math.ceil(min((i + 1) * rows_per_program, p) / block_n) for i in range(math.ceil(p / rows_per_program)))


def stats_cost(*, b: int, h: int, hkv: int, p: int, d: int, bytes_per: int, n_rules: int, config: tuple,
               profile: dict[str, int], float32: bool = False) -> dict[str, float]:
    """Work of one statistics-kernel call (one layer), masses of ``n_rules`` rules on every row."""
    block_m, block_n, warps = config[:3]
    g = h // hkv
    dp = max(16, 1 << (d - 1).bit_length())
    it = b * hkv * iterations(p, block_m // g, block_n)
    return {
        "bytes": b * h * p * d * bytes_per + b * hkv * p * d * bytes_per + b * p * 8 + b * h * p * 4 * (1 + n_rules),
        "mma_flops": it * block_m * block_n * dp * 2 * (3 if float32 else 1),
        "exp2": it * profile["loop_mufu"] * warps * 32,
        "warp_instructions": it * profile["loop_instructions"] * warps,
        "scores": b * h * p * (p + 1) / 2,
    }


def count_cost(*, b: int, p: int, config: tuple, profile: dict[str, int]) -> dict[str, float]:
    """Work of the target-count kernel (once per forward pass)."""
    block_m, block_n, warps = config[:3]
    it = b * iterations(p, block_m, block_n)
    return {"bytes": b * p * 16, "mma_flops": 0, "exp2": 0, "warp_instructions": it * profile["loop_instructions"] * warps}


def flash_cost(*, b: int, h: int, hkv: int, p: int, d: int, bytes_per: int) -> dict[str, float]:
    """A causal flash-attention forward of the same shape: QK^T and PV on visible scores."""
    scores = b * h * p * (p + 1) / 2
    return {"bytes": (2 * b * h * p * d + 2 * b * hkv * p * d) * bytes_per, "mma_flops": 4 * d * scores,
            "exp2": scores, "warp_instructions": 0}


def roofs(cost: dict[str, float], dev: dict[str, Any], float32: bool = False) -> dict[str, float]:
    rate = dev["tf32"] if float32 else dev["bf16"]
    per_sm_clock = dev["sms"] * dev["clock"]
    return {
        "HBM": cost["bytes"] / dev["hbm"],
        "tensor cores": cost["mma_flops"] / rate,
        "exp2 (MUFU)": cost["exp2"] / (MUFU_PER_CLOCK * per_sm_clock),
        "instruction issue": cost["warp_instructions"] / (ISSUE_PER_CLOCK * per_sm_clock),
    }


def bound(r: dict[str, float]) -> tuple[float, str]:
    name = max(r, key=lambda k: r[k])
    return r[name], name


def profiles(configs: list[tuple], arch: int, d: int, group: int) -> dict[tuple, dict[str, Any]]:
    """Compile the scan's statistics kernel (bfloat16) for each configuration, and the count kernel."""
    import triton_aot as aot

    out = {}
    for config in configs:
        case = aot.Case("roofline", "bfloat16", d, group, SCAN_RULES, config=config)
        row = aot.compile_case((case, "stats", arch))
        if "error" in row:
            raise SystemExit(f"compile failed: {row['error']}")
        out[config] = row
    case = aot.Case("roofline", "bfloat16", d, group, SCAN_RULES, config=configs[0])
    out["count"] = aot.compile_case((case, "count", arch))
    return out


def measure_cpu(lengths: list[int], repeats: int) -> list[tuple[int, float]]:
    """Seconds per call of the torch path (CPU, float32) for one layer of the 8B shape, scan rules."""
    import torch

    from interp.kernels import attention_stats

    m = MODEL_8B
    out = []
    for n in lengths:
        g = torch.Generator().manual_seed(0)
        q = torch.randn(1, m["heads"], n, m["d"], generator=g)
        k = torch.randn(1, m["kv_heads"], n, m["d"], generator=g)
        tokens = torch.randint(0, 2000, (1, n), generator=g)
        times = []
        for _ in range(repeats + 1):
            start = time.perf_counter()
            attention_stats(q, k, scaling=m["d"] ** -0.5, rules=list(SCAN_RULES), tokens=tokens, row_stats=False,
                            backend="torch")
            times.append(time.perf_counter() - start)
        out.append((n, statistics.median(times[1:])))
    return out


def fit_quadratic(points: list[tuple[int, float]]) -> tuple[float, float]:
    """Least-squares a, b >= 0 of t = a·P² + b·P, relative errors weighted equally (a noisy
    measurement must not give a negative cost when extrapolated)."""

    def sse(a: float, b: float) -> float:
        return sum(((a * p * p + b * p) / t - 1) ** 2 for p, t in points)

    # Minimise sum((a·P²/t + b·P/t - 1)²): normal equations in x = P²/t, y = P/t.
    xx = sum((p * p / t) ** 2 for p, t in points)
    yy = sum((p / t) ** 2 for p, t in points)
    xy = sum(p * p / t * p / t for p, t in points)
    x1 = sum(p * p / t for p, t in points)
    y1 = sum(p / t for p, t in points)
    det = xx * yy - xy * xy
    candidates = [(x1 / xx, 0.0), (0.0, y1 / yy)]  # one term only
    if det > 0:
        a, b = (x1 * yy - y1 * xy) / det, (y1 * xx - x1 * xy) / det
        if a >= 0 and b >= 0:
            candidates.append((a, b))
    return min(candidates, key=lambda ab: sse(*ab))


def _cfg(c) -> str:
    """BLOCK_M-BLOCK_N-warps-stages, and the register limit where it is not the usual 255."""
    return f"M{c[0]}-N{c[1]}-w{c[2]}-s{c[3]}" + ("" if len(c) < 5 or c[4] == 255 else f"-r{c[4] or 'ptxas'}")


def _fmt_s(t: float) -> str:
    if t < 1e-3:
        return f"{t * 1e6:.0f} µs"
    if t < 1:
        return f"{t * 1e3:.1f} ms"
    return f"{t:.2f} s" if t < 120 else f"{t / 60:.1f} min" if t < 7200 else f"{t / 3600:.1f} h"


def _load() -> str:
    try:
        return "load average " + ", ".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        return "load average unknown"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lengths", default="32768,131072", help="tokens of the scanned sequence")
    parser.add_argument("--cpu-lengths", default="512,1024,2048", help="lengths the torch path is timed at")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="one short CPU measurement; no file unless --out")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    os.environ.pop("TRITON_INTERPRET", None)
    import torch
    import triton

    from interp.kernels.triton_stats import COUNT_CONFIG, configs_for

    m = MODEL_8B
    g = m["heads"] // m["kv_heads"]
    configs = [(c.block_m, c.block_n, c.num_warps, c.num_stages, c.maxnreg) for c in configs_for(m["d"], torch.bfloat16)]
    count_cfg = (COUNT_CONFIG.block_m, COUNT_CONFIG.block_n, COUNT_CONFIG.num_warps, COUNT_CONFIG.num_stages,
                 COUNT_CONFIG.maxnreg)
    by_arch = {arch: profiles(configs, arch, m["d"], g) for arch in sorted({d["arch"] for d in DEVICES.values()})}
    cpu_lengths = [256, 512] if args.quick else [int(x) for x in args.cpu_lengths.split(",")]
    load_before = _load()
    cpu = measure_cpu(cpu_lengths, 1 if args.quick else args.repeats)
    load_after = _load()
    a, bq = fit_quadratic(cpu)
    lengths = [int(x) for x in args.lengths.split(",")]
    layer = dict(b=1, h=m["heads"], hkv=m["kv_heads"], d=m["d"], bytes_per=2)

    def best_stats(n: int, dev: dict[str, Any]) -> tuple[float, str, tuple, dict[str, float]]:
        """Bound of one layer's statistics call: the best configuration of the table."""
        best = None
        for config in configs:
            cost = stats_cost(p=n, n_rules=len(SCAN_RULES), config=config, profile=by_arch[dev["arch"]][config],
                              **layer)
            t, roof = bound(roofs(cost, dev))
            if best is None or t < best[0]:
                best = (t, roof, config, cost)
        assert best is not None
        return best

    lines = ["# Roofline of the attention-statistics kernels, and an 8B head scan on one GPU", "",
             f"`python benchmarks/roofline.py` (Triton {triton.__version__}, torch {torch.__version__}; no GPU needed: "
             "the per-key-block instruction counts come from the kernel compiled for each GPU's architecture, as in "
             "`benchmarks/triton_aot.py`).", "",
             "## Assumptions", "",
             "- Predicted time of a call = the largest of four roofs, each at the device's published peak: HBM bytes / "
             "memory bandwidth; tensor-core FLOPs / dense tensor throughput (BF16; TF32 for float32 inputs, three "
             "products each); exp2 / special-function throughput (16 per clock per SM); warp instructions / issue "
             "rate (4 per clock per SM). A lower bound: full occupancy, perfect overlap of the four, no launch "
             "overhead, every key tile re-read from L2 rather than HBM.",
             "- HBM bytes: q and k read once, token ids and row indices (int32) read once, the log-sum-exp and one "
             "mass per rule (float32) written once. The statistics kernel writes no probabilities.",
             "- Work per key block (SASS instructions, MUFU and MMA instructions per warp) is counted in the compiled "
             "kernel's key loop for each target; a key block is visited once per program whose rows can see it "
             "(causal: about half of all).",
             "- Clock: the one implied by the tensor-core figure (FLOPs / (SMs × dense FLOPs per clock per SM: "
             "2048 on A100, 4096 on H100/H200)).",
             "- The flash-attention forward of the same shape: QK^T and PV on the visible scores (4·d FLOPs and one "
             "exp2 each), q, k, v read and o written once; its instruction count is not modelled (its tensor-core "
             "roof dominates).",
             "- The scan: the eight rules of the natural-text protocol (bos, dup, ngram1-4, prev, self), masses on "
             "every row, one sequence, every layer; the target counts (tokens only) once per pass.", "",
             "## Devices (published figures, dense)", "",
             "| device | HBM bandwidth | BF16 tensor | TF32 tensor | SMs | clock (implied) | source |",
             "|---|---|---|---|---|---|---|"]
    for name, dev in DEVICES.items():
        lines.append(f"| {name} | {dev['hbm'] / 1e12:.2f} TB/s | {dev['bf16'] / 1e12:.0f} TFLOPS | "
                     f"{dev['tf32'] / 1e12:.0f} TFLOPS | {dev['sms']} | {dev['clock'] / 1e9:.2f} GHz | {dev['source']} |")
    lines += ["", f"Also: exp2 {MUFU_PER_CLOCK} per clock per SM and {ISSUE_PER_CLOCK} warp instructions issued per clock "
              "per SM on both architectures (CUDA C Programming Guide, arithmetic instruction throughput; "
              "four warp schedulers per SM in the A100 and H100 whitepapers).", ""]

    lines += ["## Per call (one layer): the statistics kernel's work", "",
              "b: batch, H: query heads, Hkv: kv heads, G = H/Hkv, P: positions (every row a query, causal), d: head "
              "size (DP: padded to a power of two), s: bytes per q/k element.", "",
              "| quantity | formula |", "|---|---|",
              "| HBM bytes | b·H·P·d·s + b·Hkv·P·d·s + 8·b·P + 4·b·H·P·(1 + rules) |",
              "| key blocks (iterations) | b·Hkv·Σ_i ceil(min((i+1)·R, P)/BLOCK_N), R = BLOCK_M/G rows per program; "
              "≈ b·Hkv·P²/(2·R·BLOCK_N) |",
              "| tensor-core FLOPs | iterations · BLOCK_M · BLOCK_N · DP · 2 (×3 for float32) ≈ b·H·P²·DP |",
              "| exp2 | iterations · MUFU per warp and key block · warps · 32 ≈ b·H·P²/2 (+ one rescale per row and "
              "block) |",
              "| warp instructions | iterations · SASS instructions per warp and key block · warps |",
              "| target counts (once per pass) | 16·b·P bytes; b·Σ_i ceil(min((i+1)·64, P)/32) key blocks of the count "
              "kernel |",
              "| flash-attention forward | 4·d·b·H·P²/2 FLOPs, b·H·P²/2 exp2, (2·H + 2·Hkv)·b·P·d·s bytes |", "",
              f"One layer of the {m['name']} ({m['heads']} query / {m['kv_heads']} kv heads, d_head {m['d']}, "
              "bfloat16, b = 1), scan rules, on the H200 (sm_90), best configuration of the table:", "",
              "| tokens | HBM bytes | tensor-core FLOPs | exp2 | warp instructions | HBM roof | tensor roof | exp2 roof "
              "| issue roof | bound |", "|---|---|---|---|---|---|---|---|---|---|"]
    h200 = DEVICES["H200 SXM 141GB"]
    for n in sorted({4096, *lengths}):
        t, roof, config, cost = best_stats(n, h200)
        r = roofs(cost, h200)
        lines.append(f"| {n:,} | {cost['bytes'] / 1e6:.0f} MB | {cost['mma_flops'] / 1e12:.2f} T | "
                     f"{cost['exp2'] / 1e9:.1f} G | {cost['warp_instructions'] / 1e9:.1f} G | "
                     + " | ".join(_fmt_s(r[k]) for k in ("HBM", "tensor cores", "exp2 (MUFU)", "instruction issue"))
                     + f" | {_fmt_s(t)} ({roof}, {_cfg(config)}) |")

    lines += ["", f"### Compiled key loop, scan rules (8 rules, masses on every row), bfloat16, d_head {m['d']}, G {g}", "",
              "| target | config | SASS instructions per warp and key block | MUFU | MMA | warp instructions per score "
              "| registers | occupancy |", "|---|---|---|---|---|---|---|---|"]
    occupancies = []
    for arch, prof in by_arch.items():
        for config in configs:
            pr = prof[config]
            occupancies.append(pr["occupancy"])
            per_score = pr["loop_instructions"] * config[2] / (config[0] * config[1])
            lines.append(f"| sm_{arch} | {_cfg(config)} | {pr['loop_instructions']} | {pr['loop_mufu']} | "
                         f"{pr['loop_mma']} | {per_score:.2f} | {pr['regs']} | {pr['occupancy']:.0%} |")
        c = prof["count"]
        lines.append(f"| sm_{arch} | count kernel {_cfg(count_cfg)} | {c['loop_instructions']} | - | - | "
                     f"{c['loop_instructions'] * count_cfg[2] / (count_cfg[0] * count_cfg[1]):.2f} (per row and key) | "
                     f"{c['regs']} | {c['occupancy']:.0%} |")

    lines += ["", f"## {m['name']}: one head_stats pass ({m['layers']} layers, {m['heads']} query / {m['kv_heads']} kv "
              f"heads, d_head {m['d']}, bfloat16), scan rules on every row of one sequence", "",
              "| tokens | device | statistics kernel, all layers (bound) | best config | target counts | "
              "flash-attention forward, all layers (bound) | statistics / flash | model forward, 2·params·tokens "
              "FLOPs (bound) | torch path on this CPU, all layers |", "|---|---|---|---|---|---|---|---|---|"]
    readme = ["| tokens | GPU | statistics kernel, 32 layers | flash-attention forward, 32 layers | ratio | whole scan "
              "pass (weights + flash attention + statistics) | torch path, this 2-core CPU (extrapolated) |",
              "|---|---|---|---|---|---|---|"]
    summary: dict[str, Any] = {}
    for n in lengths:
        cpu_s = (a * n * n + bq * n) * m["layers"]
        for name, dev in DEVICES.items():
            t, roof, cfg, _ = best_stats(n, dev)
            t *= m["layers"]
            t_count, _ = bound(roofs(count_cost(b=1, p=n, config=count_cfg, profile=by_arch[dev["arch"]]["count"]), dev))
            t_fa, fa_roof = bound(roofs(flash_cost(p=n, **layer), dev))
            t_fa *= m["layers"]
            t_model = 2 * m["params"] * n / dev["bf16"]
            summary[f"{n} {name}"] = {"stats_s": t, "flash_s": t_fa, "ratio": t / t_fa, "pass_s": t + t_fa + t_model + t_count,
                                      "cpu_s": cpu_s}
            lines.append(f"| {n:,} | {name} | {_fmt_s(t)} ({roof}) | {_cfg(cfg)} | {_fmt_s(t_count)} | "
                         f"{_fmt_s(t_fa)} ({fa_roof}) | {t / t_fa:.1f}× | {_fmt_s(t_model)} | {_fmt_s(cpu_s)} "
                         "(extrapolated) |")
            readme.append(f"| {n // 1024}k | {name.split()[0]} | {_fmt_s(t)} | {_fmt_s(t_fa)} | {t / t_fa:.1f}× | "
                          f"{_fmt_s(t + t_fa + t_model + t_count)} | {_fmt_s(cpu_s)} |")
    occ = f"{min(occupancies):.0%}-{max(occupancies):.0%}" if len(set(occupancies)) > 1 else f"{occupancies[0]:.0%}"
    lines += ["", "Bounds are lower bounds: the largest of the four roofs, at full occupancy and perfect overlap. The "
              "statistics kernel evaluates eight rules on every visible score with CUDA-core instructions, so its "
              "roof is instruction issue, not memory or tensor cores; a flash-attention forward is bound by its "
              f"tensor-core work (QK^T and PV). Measured times on a GPU will land above these bounds (occupancy {occ} "
              "of the warp slots for these configurations, latency of the row reductions); "
              "`benchmarks/gpu_check.sh` measures them. The model-forward column is the weights' matrix products "
              "alone (2·params FLOPs per token), for scale: at these lengths attention dominates a forward pass.", "",
              "## The torch path on this CPU (measured)", "",
              f"One layer of the 8B shape, float32, `attention_stats(..., backend=\"torch\")`, masses of the scan rules "
              f"on every row ({os.cpu_count()} cores, {torch.get_num_threads()} threads, torch {torch.__version__}; "
              f"median of {1 if args.quick else args.repeats} runs after one warm-up; {load_before} before and "
              f"{load_after} after: other work on the machine makes these times longer):", "",
              "| tokens | seconds per layer (median) |", "|---|---|"]
    lines += [f"| {n} | {t:.3f} |" for n, t in cpu]
    lines += ["", f"Fit t = a·P² + b·P (a, b ≥ 0, relative error): a = {a:.3e} s, b = {bq:.3e} s; extrapolated per pass "
              f"({m['layers']} layers): " + ", ".join(f"{n:,} tokens {_fmt_s((a * n * n + bq * n) * m['layers'])}"
                                                    for n in lengths) + ".",
              "", "## For the README", "", *readme]
    text = "\n".join(lines) + "\n"
    print(text)
    print(json.dumps(summary))
    out = args.out or (None if args.quick else RESULTS / "roofline.md")
    if out is not None:
        from interp.results.folders import kind_for, output_folder

        # interp's output folder, written beside other files (logs, other tables), never over them
        with output_folder(out.parent, kind=kind_for(out.stem), force=True) as dest:
            dest.write_text(out.name, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
