"""Triton attention-statistics kernel on CUDA: achieved bandwidth against the device's copy bandwidth.

For two attention shapes, SmolLM2-135M's (9 query heads, 3 kv heads, d_head 64, float32, the
default scan) and one layer of an 8B model (32 query heads, 8 kv heads, d_head 128, bfloat16),
at several lengths, times ``attention_stats(..., backend="triton")`` for the head scan's rule set
on every row: as one call (the target-count kernel included) and as one layer of a forward pass
(counts already in the plan, as ``head_stats`` runs it). It reports the bytes the kernel must
move at least once (q, k, token ids read; log-sum-exp and masses written) per second, next to a
device-to-device copy of the same tensors (the memory roofline), the scores (visible q·k pairs)
per second, and the time of ``torch.nn.functional.scaled_dot_product_attention`` (causal
forward, same q and k) for scale.

    python benchmarks/triton_bandwidth.py --out DIR          # needs a CUDA device
    TRITON_INTERPRET=1 python benchmarks/triton_bandwidth.py --smoke   # tiny CPU check of the script
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from interp.kernels import attention_stats
from interp.results.folders import output_folder
from interp.results.protocol import write_json

RESULTS = Path(__file__).parent / "results"
RULES = ["bos", "dup", "ngram1", "ngram2", "ngram3", "ngram4", "prev", "self"]  # the scan's natural-text set
SHAPES = {  # name: (query heads, kv heads, d_head, dtype)
    "SmolLM2-135M (fp32)": (9, 3, 64, torch.float32),
    "8B layer (bf16)": (32, 8, 128, torch.bfloat16),
}


def _time(fn, device: str, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lengths", default="4096,16384,32768")
    parser.add_argument("--shapes", default=",".join(SHAPES), help="comma-separated, from: " + ", ".join(SHAPES))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU (Triton interpreter)")
    parser.add_argument("--out", type=Path, help="folder for triton_bandwidth_<device>.md/.json (default: "
                        "benchmarks/results; nothing written with --smoke unless given)")
    args = parser.parse_args()
    device = "cpu" if args.smoke else "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: run this on a GPU machine, or --smoke with TRITON_INTERPRET=1")
    lengths = [64] if args.smoke else [int(n) for n in args.lengths.split(",")]
    repeats = 1 if args.smoke else args.repeats
    rows = []
    for shape in args.shapes.split(","):
        h, hkv, d, dtype = SHAPES[shape]
        for n in lengths:
            g = torch.Generator(device=device).manual_seed(0)
            q = torch.randn(1, h, n, d, device=device, generator=g).to(dtype)
            k = torch.randn(1, hkv, n, d, device=device, generator=g).to(dtype)
            tokens = torch.randint(0, 2000, (1, n), device=device, generator=g)
            plan: dict = {}

            def call(q=q, k=k, tokens=tokens, d=d):
                return attention_stats(q, k, scaling=d**-0.5, rules=RULES, tokens=tokens, row_stats=False,
                                       backend="triton")

            def layer(q=q, k=k, tokens=tokens, plan=plan, d=d):
                return attention_stats(q, k, scaling=d**-0.5, rules=RULES, tokens=tokens, row_stats=False,
                                       backend="triton", plan=plan)

            def copy(q=q, k=k):
                return q.clone(), k.clone()

            t_call = _time(call, device, repeats)
            t_layer = _time(layer, device, repeats)
            t_copy = _time(copy, device, repeats)
            tensor_bytes = q.numel() * q.element_size() + k.numel() * k.element_size()
            bytes_min = tensor_bytes + tokens.numel() * 4 + (1 + len(RULES)) * q.numel() // d * 4
            scores = h * n * (n + 1) / 2
            row = {"shape": shape, "tokens": n, "dtype": str(dtype).removeprefix("torch."),
                   "call_ms": 1e3 * t_call, "layer_ms": 1e3 * t_layer, "layer_GBps": bytes_min / t_layer / 1e9,
                   "copy_GBps": 2 * tensor_bytes / t_copy / 1e9, "Gscores_per_s": scores / t_layer / 1e9}
            if device == "cuda":
                kk = k.repeat_interleave(h // hkv, dim=1)

                def sdpa(q=q, kk=kk):
                    return torch.nn.functional.scaled_dot_product_attention(q, kk, kk, is_causal=True)

                row["sdpa_ms"] = 1e3 * _time(sdpa, device, repeats)
                row["layer_over_sdpa"] = row["layer_ms"] / row["sdpa_ms"]
                del kk
            rows.append(row)
            print(json.dumps(row), flush=True)
    name = torch.cuda.get_device_name() if device == "cuda" else "cpu (Triton interpreter, smoke test)"
    nan = float("nan")
    lines = [f"# Triton attention statistics on {name}", "",
             f"torch {torch.__version__}; the scan's rules ({', '.join(RULES)}), masses on every row, causal; median "
             f"of {repeats} runs. Bytes: q, k and token ids read, log-sum-exp and masses written, each once.", "",
             "| shape | tokens | one call (ms, counts included) | one layer of a pass (ms) | layer GB/s | copy GB/s "
             "(read + write) | G scores/s | SDPA causal forward (ms) | layer / SDPA |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['shape']} | {r['tokens']} | {r['call_ms']:.2f} | {r['layer_ms']:.2f} | {r['layer_GBps']:.1f} | "
                     f"{r['copy_GBps']:.1f} | {r['Gscores_per_s']:.1f} | {r.get('sdpa_ms', nan):.2f} | "
                     f"{r.get('layer_over_sdpa', nan):.2f} |")
    print("\n".join(lines))
    out = args.out if args.out is not None else (None if args.smoke else RESULTS)
    if out is not None:
        stem = "triton_bandwidth_" + ("cpu_smoke" if args.smoke else "cuda")
        # interp's output folder, written beside other files (logs, other tables), never over them
        with output_folder(out, kind=stem, force=True) as dest:
            dest.write_text(f"{stem}.md", "\n".join(lines) + "\n")
            write_json(dest, f"{stem}.json", {"device": name, "rows": rows})


if __name__ == "__main__":
    main()
