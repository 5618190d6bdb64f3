"""Head-scan benchmark: induction and previous-token statistics for every head of SmolLM2.

Each (method, length) runs in its own process, so peak RSS is that method's alone:

  sdpa      the model's own forward pass (SDPA): the floor
  interp    interp.head_stats: kernel statistics inside the forward pass, nothing stored
  hf_eager  HF eager attention with output_attentions=True, scores from the dense patterns
  tl        TransformerLens 4 TransformerBridge.run_with_cache + head_detector.detect_head

All score the same thing, TransformerLens's "mul" score (mass on the detection pattern over
total mass) for previous-token and induction heads, on the first N tokens of the shipped
public-domain text; the script checks the scores agree. Workers run under an address-space
limit (default 22 GiB) so a method that needs more fails with an error, which is reported.

    python benchmarks/head_scan.py                       # all lengths and methods
    python benchmarks/head_scan.py --lengths 512,1024 --methods sdpa,interp
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

MODEL = "smollm2-135m"
METHODS = ["sdpa", "interp", "hf_eager", "tl"]
LENGTHS = [512, 1024, 2048, 4096, 8192]
RESULTS = Path(__file__).parent / "results"


# -- worker side ----------------------------------------------------------------------------------


def _rss_gib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 2**20
    return float("nan")


def _peak_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def _tokens(model, n: int) -> torch.Tensor:
    from interp.corpus import text

    ids = model.tokenizer(text("alice"), return_tensors="pt")["input_ids"][:, :n]
    if ids.shape[1] < n:
        raise SystemExit(f"the shipped text has only {ids.shape[1]} tokens, fewer than {n}")
    return ids


def _dense_scores(patterns: list[torch.Tensor], ids: torch.Tensor) -> dict[str, list[list[float]]]:
    """TransformerLens "mul" scores from full patterns [H, P, P] per layer."""
    tok = ids[0]
    dup = (tok[:, None] == tok[None, :]).tril(-1)
    induction = torch.zeros_like(dup)
    induction[:, 1:] = dup[:, :-1]
    out: dict[str, list[list[float]]] = {"prev": [], "induction": []}
    for a in patterns:
        a = a.float()
        total = a.sum(dim=(-1, -2))
        out["prev"].append((a.diagonal(offset=-1, dim1=-2, dim2=-1).sum(-1) / total).tolist())
        out["induction"].append(((a * induction).sum(dim=(-1, -2)) / total).tolist())
    return out


def run_sdpa(model, ids):
    with torch.no_grad():
        model.hf(input_ids=ids, use_cache=False)
    return None


def run_interp(model, ids):
    from interp.head_stats import head_stats

    stats = head_stats(model, ids, rules=["prev", "ngram1"])
    return {
        "prev": [stats[layer].mass["prev"][0].mean(-1).tolist() for layer in sorted(stats)],
        "induction": [stats[layer].mass["ngram1"][0].mean(-1).tolist() for layer in sorted(stats)],
    }


def run_hf_eager(model, ids):
    hf = model.hf
    hf.set_attn_implementation("interp_eager")
    with torch.no_grad():
        out = hf(input_ids=ids, output_attentions=True, use_cache=False)
    return _dense_scores([a[0] for a in out.attentions], ids)


_TL = {}


def run_tl(model, ids):
    from transformer_lens.head_detector import detect_head
    from transformer_lens.model_bridge import TransformerBridge

    from interp.loading import prepare

    if "bridge" not in _TL:
        folder = prepare(MODEL).path
        bridge = TransformerBridge.boot_transformers(str(folder), device="cpu", dtype=torch.float32)
        bridge.enable_compatibility_mode()
        _TL["bridge"] = bridge
    bridge = _TL["bridge"]
    text = model.tokenizer.decode(ids[0])
    return {
        "prev": detect_head(bridge, text, "previous_token_head").tolist(),
        "induction": detect_head(bridge, text, "induction_head").tolist(),
    }


def worker(method: str, n: int, repeats: int, limit_gib: float) -> None:
    limit = int(limit_gib * 2**30)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    import interp

    model = interp.load(MODEL)
    ids = _tokens(model, n)
    base = _rss_gib()
    fn = globals()[f"run_{method}"]
    times, scores, status = [], None, "ok"
    try:
        fn(model, ids[:, :64])  # one-time start-up costs (thread pools, kernels) are not the method's
        for _ in range(repeats):
            start = time.perf_counter()
            scores = fn(model, ids)
            times.append(time.perf_counter() - start)
    except (MemoryError, RuntimeError) as exc:
        status = f"failed: {type(exc).__name__}: {str(exc).splitlines()[0][:120]}"
    print(json.dumps({
        "method": method, "tokens": n, "status": status, "times": times,
        "median_s": statistics.median(times) if times else None,
        "peak_rss_gib": _peak_gib(), "model_rss_gib": base, "scores": scores,
    }))


# -- parent side ---------------------------------------------------------------------------------


def _run(method: str, n: int, repeats: int, limit_gib: float, timeout: float) -> dict:
    cmd = [sys.executable, __file__, "--worker", method, "--tokens", str(n), "--repeats", str(repeats),
           "--limit-gib", str(limit_gib)]
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"method": method, "tokens": n, "status": f"failed: timed out after {timeout:.0f} s"}
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        why = (proc.stderr.strip().splitlines() or [f"exit code {proc.returncode}"])[-1][:160]
        if proc.returncode < 0:
            why = f"killed by signal {-proc.returncode} ({why})"
        return {"method": method, "tokens": n, "status": f"failed: {why}",
                "wall_s": time.perf_counter() - start}
    return json.loads(lines[-1])


def _agreement(a: dict | None, b: dict | None) -> str:
    if not a or not b:
        return ""
    diffs = [
        abs(x - y)
        for key in ("prev", "induction")
        for row_a, row_b in zip(a[key], b[key], strict=True)
        for x, y in zip(row_a, row_b, strict=True)
    ]
    return f"{max(diffs):.1e}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lengths", default=",".join(map(str, LENGTHS)))
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--repeats", type=int, default=3, help="timed runs for sdpa and interp (median)")
    parser.add_argument("--limit-gib", type=float, default=22.0)
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds per worker")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--tokens", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args.worker, args.tokens, args.repeats, args.limit_gib)

    from interp.atomic import atomic_write_text

    rows = []
    for n in map(int, args.lengths.split(",")):
        by_method = {}
        for method in args.methods.split(","):
            repeats = args.repeats if method in ("sdpa", "interp") else 1
            result = _run(method, n, repeats, args.limit_gib, args.timeout)
            by_method[method] = result
            rows.append(result)
            print(f"{n:>6} {method:<9} {result['status']:<8} "
                  f"{result.get('median_s') or float('nan'):8.2f} s  peak {result.get('peak_rss_gib') or float('nan'):6.2f} GiB",
                  flush=True)
        floor = (by_method.get("sdpa") or {}).get("median_s")
        ours = by_method.get("interp") or {}
        for r in by_method.values():
            r["x_sdpa"] = r["median_s"] / floor if floor and r.get("median_s") else None
            r["max_diff_vs_interp"] = _agreement(ours.get("scores"), r.get("scores")) if r is not ours else ""

    header = "| tokens | method | status | median time (s) | × SDPA forward | peak RSS (GiB) | model alone (GiB) | max |score − interp| |"
    lines = [header, "|" + "---|" * 8]
    for r in rows:
        def fmt(v, spec):
            return format(v, spec) if isinstance(v, (int, float)) else "—"
        lines.append(
            f"| {r['tokens']} | {r['method']} | {r['status']} | {fmt(r.get('median_s'), '.2f')} | "
            f"{fmt(r.get('x_sdpa'), '.2f')} | {fmt(r.get('peak_rss_gib'), '.2f')} | {fmt(r.get('model_rss_gib'), '.2f')} | "
            f"{r.get('max_diff_vs_interp') or '—'} |"
        )
    env = (f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
           f"{torch.get_num_threads()} threads, float32, one sequence")
    lines.append("")
    lines.append("TransformerLens's detect_head tokenizes the text itself and prepends a BOS token, so its input "
                 "is one token longer; its small score differences come from that.")
    table = "\n".join(lines)
    print(f"\nHead scan, SmolLM2-135M (30 layers x 9 heads), {env}\n\n{table}")
    RESULTS.mkdir(exist_ok=True)
    atomic_write_text(RESULTS / "head_scan_cpu.md", f"# Head scan on the CPU\n\n{env}\n\n{table}\n")
    atomic_write_text(RESULTS / "head_scan_cpu.json", json.dumps({"environment": env, "rows": [
        {k: v for k, v in r.items() if k != "scores"} for r in rows]}, indent=1))


if __name__ == "__main__":
    main()
