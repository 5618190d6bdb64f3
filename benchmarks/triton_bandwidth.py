"""Triton attention-statistics kernel on CUDA: achieved bandwidth against the device's copy bandwidth.

For SmolLM2's attention shapes (9 query heads, 3 kv heads, d_head 64) at several lengths, times
``attention_stats(..., backend="triton")`` for the previous-token and induction masses on every
row, and reports the bytes the kernel must read at least once (q, k, token ids) per second,
next to a device-to-device copy of the same tensors (the memory roofline), and the time of
``torch.nn.functional.scaled_dot_product_attention`` on the same q/k for scale.

    python benchmarks/triton_bandwidth.py                 # needs a CUDA device
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

RESULTS = Path(__file__).parent / "results"


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
    parser.add_argument("--lengths", default="4096,8192,16384,32768")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU (Triton interpreter)")
    args = parser.parse_args()
    device = "cpu" if args.smoke else "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: run this on a GPU machine, or --smoke with TRITON_INTERPRET=1")
    lengths = [64] if args.smoke else [int(n) for n in args.lengths.split(",")]
    repeats = 1 if args.smoke else args.repeats
    b, h, hkv, d = 1, 9, 3, 64
    rows = []
    for n in lengths:
        g = torch.Generator(device=device).manual_seed(0)
        q = torch.randn(b, h, n, d, device=device, generator=g)
        k = torch.randn(b, hkv, n, d, device=device, generator=g)
        tokens = torch.randint(0, 2000, (b, n), device=device, generator=g)

        def kernel(q=q, k=k, tokens=tokens):
            return attention_stats(q, k, scaling=d**-0.5, rules=["prev", "ngram1"], tokens=tokens,
                                   row_stats=True, backend="triton")

        def copy(q=q, k=k):
            return q.clone(), k.clone()

        t_kernel = _time(kernel, device, repeats)
        t_copy = _time(copy, device, repeats)
        bytes_min = q.numel() * q.element_size() + k.numel() * k.element_size() + tokens.numel() * 8
        row = {"tokens": n, "kernel_ms": 1e3 * t_kernel, "kernel_GBps": bytes_min / t_kernel / 1e9,
               "copy_GBps": 2 * (q.numel() + k.numel()) * 4 / t_copy / 1e9}
        if device == "cuda":
            kk = k.repeat_interleave(h // hkv, dim=1)

            def sdpa(q=q, kk=kk):
                return torch.nn.functional.scaled_dot_product_attention(q, kk, kk, is_causal=True)

            row["sdpa_ms"] = 1e3 * _time(sdpa, device, repeats)
        rows.append(row)
        print(json.dumps(row), flush=True)
    name = torch.cuda.get_device_name() if device == "cuda" else "cpu (Triton interpreter, smoke test)"
    lines = [f"# Triton attention statistics on {name}", "",
             "| tokens | kernel (ms) | kernel GB/s (q,k,tokens read once) | copy GB/s | SDPA fwd (ms) |",
             "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['tokens']} | {r['kernel_ms']:.2f} | {r['kernel_GBps']:.1f} | {r['copy_GBps']:.1f} | "
                     f"{r.get('sdpa_ms', float('nan')):.2f} |")
    print("\n".join(lines))
    if not args.smoke:
        from interp.atomic import atomic_write_text

        RESULTS.mkdir(exist_ok=True)
        atomic_write_text(RESULTS / "triton_bandwidth_cuda.md", "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
