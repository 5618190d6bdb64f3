"""Head-scan benchmark: induction and previous-token statistics for every head of SmolLM2.

Each (method, length) runs in its own process, so peak RSS (and on CUDA peak GPU memory) is
that method's alone:

  sdpa       the model's own full forward pass (SDPA), logits included: the floor the issue names
  sdpa_stop  the same SDPA forward stopped where interp stops: right after the last layer's
             attention, so without the last o_proj and MLP, the final norm and the LM head
             (whose [tokens x 49152] logits dominate SmolLM2's forward at long lengths)
  interp     interp.heads.kernel_stats: kernel statistics inside the forward pass, nothing stored; it
             ends the pass after the last layer's attention (head_stats raises _Done there)
  hf_eager   HF eager attention with output_attentions=True, scores from the dense patterns
  tl         TransformerLens 4 TransformerBridge.run_with_cache + head_detector.detect_head

hf_eager and tl run the full forward, logits included, as their APIs do. The table gives
interp's time both against the full forward (sdpa) and against the comparable one (sdpa_stop).

All score the same thing, TransformerLens's "mul" score (mass on the detection pattern over
total mass) for previous-token and induction heads, on the first N tokens of the shipped
public-domain text; the script checks the scores agree. Workers run under an address-space
limit (default 22 GiB) so a method that needs more fails with an error, which is reported.

With ``--device cuda`` every method runs on the GPU (TransformerLens's bridge too; interp's
statistics then run the Triton kernel), times are taken between CUDA synchronisations, peak GPU
memory (``torch.cuda.max_memory_allocated``) is reported next to peak RSS, no address-space
limit is set (CUDA reserves far more virtual memory than it uses), and the results are written
as ``head_scan_cuda.*``.

    python benchmarks/head_scan.py                       # all lengths and methods, CPU
    python benchmarks/head_scan.py --device cuda         # the same on a CUDA device
    python benchmarks/head_scan.py --lengths 512,1024 --methods sdpa,sdpa_stop,interp
    python benchmarks/head_scan.py --lengths 512 --methods sdpa,sdpa_stop,interp --repeats 1 --out hs_smoke  # smoke
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
METHODS = ["sdpa", "sdpa_stop", "interp", "hf_eager", "tl"]
TIMED = ("sdpa", "sdpa_stop", "interp")  # repeated --repeats times (median); the others once
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
    from interp.models.corpus import text

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


class _Stop(Exception):
    """Ends sdpa_stop's forward pass where head_stats ends interp's."""


def run_sdpa_stop(model, ids):
    # head_stats raises inside the last layer's attention function, once its output is computed;
    # a pre-hook on that layer's o_proj stops at the same point with nothing else attached.
    last = model.cfg.n_layers - 1
    o_proj = model.module(f"{model.adapter.layers}.{last}.{model.adapter.o_proj}")

    def stop(module, args):
        raise _Stop

    handle = o_proj.register_forward_pre_hook(stop)
    try:
        with torch.no_grad():
            model.hf(input_ids=ids, use_cache=False)
    except _Stop:
        pass
    finally:
        handle.remove()
    return None


def run_interp(model, ids):
    from interp.heads.kernel_stats import head_stats

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

    from interp.models.loading import prepare

    if "bridge" not in _TL:
        folder = prepare(MODEL).path
        bridge = TransformerBridge.boot_transformers(str(folder), device=str(model.device), dtype=torch.float32)
        bridge.enable_compatibility_mode()
        _TL["bridge"] = bridge
    bridge = _TL["bridge"]
    text = model.tokenizer.decode(ids[0])
    return {
        "prev": detect_head(bridge, text, "previous_token_head").tolist(),
        "induction": detect_head(bridge, text, "induction_head").tolist(),
    }


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def worker(method: str, n: int, repeats: int, limit_gib: float, device: str = "cpu") -> None:
    cuda = device == "cuda"
    if not cuda:  # CUDA maps far more virtual memory than it uses: no address-space limit there
        limit = int(limit_gib * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    elif not torch.cuda.is_available():
        raise SystemExit("--device cuda but no CUDA device is available")
    import interp

    model = interp.load(MODEL, device=device)
    ids = _tokens(model, n).to(model.device)
    base = _rss_gib()
    gpu_base = torch.cuda.memory_allocated() / 2**30 if cuda else None
    fn = globals()[f"run_{method}"]
    times, scores, status = [], None, "ok"
    try:
        fn(model, ids[:, :64])  # one-time start-up costs (thread pools, kernels) are not the method's
        _sync(device)
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        for _ in range(repeats):
            start = time.perf_counter()
            scores = fn(model, ids)
            _sync(device)
            times.append(time.perf_counter() - start)
    except (MemoryError, RuntimeError) as exc:  # torch.cuda.OutOfMemoryError is a RuntimeError
        status = f"failed: {type(exc).__name__}: {str(exc).splitlines()[0][:120]}"
    print(json.dumps({
        "method": method, "tokens": n, "device": device, "status": status, "times": times,
        "median_s": statistics.median(times) if times else None,
        "peak_rss_gib": _peak_gib(), "model_rss_gib": base,
        "peak_gpu_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else None, "model_gpu_gib": gpu_base,
        "device_name": torch.cuda.get_device_name() if cuda else None, "scores": scores,
    }))


# -- parent side ---------------------------------------------------------------------------------


def _run(method: str, n: int, repeats: int, limit_gib: float, timeout: float, device: str = "cpu") -> dict:
    cmd = [sys.executable, __file__, "--worker", method, "--tokens", str(n), "--repeats", str(repeats),
           "--limit-gib", str(limit_gib), "--device", device]
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
    parser.add_argument("--repeats", type=int, default=3, help=f"timed runs for {', '.join(TIMED)} (median)")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                        help="where every method runs; results go to head_scan_<device>.md/.json")
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for the results (default: %(default)s)")
    parser.add_argument("--limit-gib", type=float, default=22.0, help="address-space limit per CPU worker")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds per worker")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--tokens", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args.worker, args.tokens, args.repeats, args.limit_gib, args.device)
    methods = args.methods.split(",")
    for method in methods:
        if method not in METHODS:
            parser.error(f"unknown method {method!r}; valid methods: {', '.join(METHODS)}")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda needs a CUDA device (none is visible here)")

    from interp.results.folders import check_output, kind_for, output_folder
    from interp.results.protocol import write_json

    check_output(args.out, force=True)  # before any work: a folder that can take the results
    cuda = args.device == "cuda"
    rows = []
    for n in map(int, args.lengths.split(",")):
        by_method = {}
        for method in methods:
            repeats = args.repeats if method in TIMED else 1
            result = _run(method, n, repeats, args.limit_gib, args.timeout, args.device)
            by_method[method] = result
            rows.append(result)
            gpu = f"  GPU {result.get('peak_gpu_gib') or float('nan'):6.2f} GiB" if cuda else ""
            print(f"{n:>6} {method:<9} {result['status']:<8} "
                  f"{result.get('median_s') or float('nan'):8.2f} s  peak {result.get('peak_rss_gib') or float('nan'):6.2f} GiB"
                  f"{gpu}", flush=True)
        full = (by_method.get("sdpa") or {}).get("median_s")
        stop = (by_method.get("sdpa_stop") or {}).get("median_s")
        ours = by_method.get("interp") or {}
        for r in by_method.values():
            t = r.get("median_s")
            r["x_sdpa"] = t / full if full and t else None
            r["x_sdpa_stop"] = t / stop if stop and t else None
            r["max_diff_vs_interp"] = _agreement(ours.get("scores"), r.get("scores")) if r is not ours else ""

    def fmt(v, spec):
        return format(v, spec) if isinstance(v, (int, float)) else "—"

    cols = ["tokens", "method", "status", "median time (s)", "× SDPA full forward", "× SDPA to last attention",
            "peak RSS (GiB)", "model alone (GiB)"]
    if cuda:
        cols += ["peak GPU (GiB)", "model alone GPU (GiB)"]
    cols.append("max \\|score − interp\\|")  # escaped: a bare | would split the Markdown cell
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        cells = [str(r["tokens"]), r["method"], r["status"], fmt(r.get("median_s"), ".2f"), fmt(r.get("x_sdpa"), ".2f"),
                 fmt(r.get("x_sdpa_stop"), ".2f"), fmt(r.get("peak_rss_gib"), ".2f"), fmt(r.get("model_rss_gib"), ".2f")]
        if cuda:
            cells += [fmt(r.get("peak_gpu_gib"), ".2f"), fmt(r.get("model_gpu_gib"), ".2f")]
        cells.append(r.get("max_diff_vs_interp") or "—")
        lines.append("| " + " | ".join(cells) + " |")
    if cuda:
        name = next((r["device_name"] for r in rows if r.get("device_name")), "CUDA")
        env = f"{name}, torch {torch.__version__}, float32, one sequence, all methods on the GPU"
    else:
        env = (f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
               f"{torch.get_num_threads()} threads, float32, one sequence")
    lines += [
        "",
        "Notes:",
        "- interp (head_stats) ends the forward pass right after the last layer's attention: it skips the last "
        "o_proj and MLP, the final norm and the LM head. \"× SDPA full forward\" compares it with the model's whole "
        "SDPA forward, logits included (sdpa); \"× SDPA to last attention\" with the same SDPA forward stopped at "
        "the same point (sdpa_stop), the like-for-like comparison.",
        "- hf_eager and tl run the full forward, logits included.",
        "- TransformerLens's detect_head tokenizes the text itself and prepends a BOS token, so its input "
        "is one token longer; its small score differences come from that.",
    ]
    if cuda:
        lines.append("- Peak GPU memory is torch.cuda.max_memory_allocated over the timed runs; peak RSS is the "
                     "host process's. No address-space limit is set on CUDA workers.")
    table = "\n".join(lines)
    where = "a CUDA device" if cuda else "the CPU"
    print(f"\nHead scan, SmolLM2-135M (30 layers x 9 heads), {env}\n\n{table}")
    stem = f"head_scan_{args.device}"
    # interp's output folder, written beside other files (logs, other tables), never over them
    with output_folder(args.out, kind=kind_for(stem), force=True) as dest:
        dest.write_text(f"{stem}.md", f"# Head scan on {where}\n\n{env}\n\n{table}\n")
        write_json(dest, f"{stem}.json", {"environment": env, "device": args.device, "rows": [
            {k: v for k, v in r.items() if k != "scores"} for r in rows]}, end="")


if __name__ == "__main__":
    main()
