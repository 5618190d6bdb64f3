"""Triton statistics against a dense float64 reference, on the GPU: the largest error of every statistic.

Cases cover every input dtype the kernel takes, head sizes 64/128/256, group sizes 1-8, all nine
rules, top-8, sliding window, soft-cap, key padding, exclusions, non-causal rows, a decoding
row, and every block configuration of one head size's autotune table; the PyTorch path on the
same device (its log-sum-exp from SDPA's fused CUDA kernel) is checked the same way. The
reference builds probabilities in float64 from the very q and k values the kernels read, and
every rule's targets from its definition (not from ``interp.kernels.targets``).

    python benchmarks/triton_accuracy.py --out DIR                          # on a CUDA device
    TRITON_INTERPRET=1 python benchmarks/triton_accuracy.py --device cpu --tiny --out DIR   # CPU smoke run
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from interp.kernels import RULES, attention_stats
from interp.kernels.attention_stats import check_problem
from interp.results.folders import check_output, output_folder
from interp.results.protocol import write_json

# name: (dtype, d, heads, kv heads, positions, window, softcap, padded, causal, rules, topk, exclude, rows)
ALL = tuple(RULES)
SCAN = ("bos", "dup", "ngram1", "ngram2", "ngram3", "ngram4", "prev", "self")
CASES = {
    "smollm2 scan (fp32 d64 G3)": ("float32", 64, 9, 3, 300, None, None, False, True, SCAN, 0, (), None),
    "fp32 d64 G3 everything": ("float32", 64, 6, 2, 300, 100, 30.0, True, True, ALL, 8, ("bos", "self"), None),
    "8B scan (bf16 d128 G4)": ("bfloat16", 128, 8, 2, 300, None, None, False, True, SCAN, 0, (), None),
    "bf16 d128 G4 everything": ("bfloat16", 128, 8, 2, 300, 90, 20.0, True, True, ALL, 8, ("bos", "self"), None),
    "fp16 d128 G4 everything": ("float16", 128, 8, 2, 300, 90, 20.0, True, True, ALL, 8, ("bos", "self"), None),
    "gemma3 (bf16 d256 G4 window)": ("bfloat16", 256, 4, 1, 300, 64, None, False, True, ALL, 3, (), None),
    "fp16 d256 G2 top-8": ("float16", 256, 4, 2, 200, None, None, True, True, SCAN, 8, ("self",), None),
    "bf16 d64 G8 non-causal": ("bfloat16", 64, 8, 1, 200, None, None, True, False, ALL, 5, (), None),
    "fp16 d64 G7 decoding row": ("float16", 64, 14, 2, 300, None, None, False, True, ALL, 8, (), [299]),
    "bf16 d128 G1 rows": ("bfloat16", 128, 4, 4, 300, None, None, True, True, ALL, 2, ("bos",), [0, 150, 299, 7]),
}


def make(case, device, tiny, seed=0):
    dtype, d, h, hkv, pos, window, softcap, padded, causal, rules, topk, exclude, rows = case
    if tiny:
        pos, rows = 40, (None if rows is None else [min(r, 39) for r in rows])
        window = None if window is None else 9
    g = torch.Generator().manual_seed(seed)
    b = 2
    q = (torch.randn(b, h, pos, d, generator=g) * 0.6).to(getattr(torch, dtype))
    k = (torch.randn(b, hkv, pos, d, generator=g) * 0.6).to(getattr(torch, dtype))
    base = torch.randint(0, 6, (b, pos // 3 + 1), generator=g)
    tokens = torch.cat([base, base, base], dim=1)[:, :pos]  # repeats: duplicate and n-gram targets are common
    key_mask = None
    if padded:
        key_mask = torch.ones(b, pos, dtype=torch.bool)
        key_mask[1, : pos // 10] = False
    n_rows = pos if rows is None else len(rows)
    starts = torch.arange(n_rows) % 7
    spans = torch.stack([starts, starts + 5], -1).expand(b, -1, -1).contiguous()
    kw = dict(scaling=d**-0.5, rules=list(rules), tokens=tokens.to(device), spans=spans.to(device),
              key_mask=None if key_mask is None else key_mask.to(device), sliding_window=window, softcap=softcap,
              causal=causal, topk=topk, exclude=list(exclude), rows=rows)
    return q.to(device), k.to(device), kw


def reference(q, k, kw):
    """Every statistic in float64 from dense scores, and each rule's targets by definition."""
    dev = q.device
    b, h, pq, _ = q.shape
    pk = k.shape[2]
    rows = torch.arange(pq, device=dev) if kw["rows"] is None else torch.as_tensor(kw["rows"], device=dev)
    qa = rows + (pk - pq)  # [R] absolute key position of each row
    keys = torch.arange(pk, device=dev)
    kk = k.double().repeat_interleave(h // k.shape[1], dim=1)
    s = torch.einsum("bhrd,bhjd->bhrj", q.double()[:, :, rows], kk) * kw["scaling"]
    if kw["softcap"] is not None:
        s = torch.tanh(s / kw["softcap"]) * kw["softcap"]
    allowed = torch.ones(b, len(rows), pk, dtype=torch.bool, device=dev)
    if kw["causal"]:
        allowed &= keys[None, None, :] <= qa[None, :, None]
    if kw["sliding_window"] is not None:
        allowed &= (qa[None, :, None] - keys[None, None, :]) < kw["sliding_window"]
    real = torch.ones(b, pk, dtype=torch.bool, device=dev) if kw["key_mask"] is None else kw["key_mask"].bool()
    allowed &= real[:, None, :]
    s = s.masked_fill(~allowed[:, None], float("-inf"))
    lse = torch.logsumexp(s, -1)
    probs = torch.exp(s - lse[..., None]).nan_to_num(0.0)
    out = {"lse": lse, "max_prob": probs.max(-1).values, "argmax": probs.argmax(-1),
           "entropy": -(probs * probs.clamp_min(1e-300).log()).sum(-1), "probs": probs, "allowed": allowed}
    if kw["topk"]:
        top = probs.topk(kw["topk"], dim=-1)
        out["topk_prob"], out["topk_index"] = top.values, top.indices
    toks = kw["tokens"].long()
    first = real.long().argmax(1)  # [b]
    i, j = qa[None, :, None], keys[None, None, :]

    def tok_at(pos):  # pos [1, R, 1] or [1, 1, K] -> tokens [b, R, 1] / [b, 1, K] (padding, out of range: -1)
        pos = pos[0]
        ok = (pos >= 0) & (pos < pk)
        p = pos.clamp(0, pk - 1)
        t = toks.gather(1, p.reshape(1, -1).expand(b, -1)).reshape(b, *pos.shape)
        r = real.gather(1, p.reshape(1, -1).expand(b, -1)).reshape(b, *pos.shape)
        return torch.where(ok & r, t, torch.full_like(t, -1)), ok & r

    masses, counts = {}, {}
    for rule in kw["rules"]:
        if rule == "prev":
            t = (j == i - 1).expand(b, -1, -1)
        elif rule == "self":
            t = (j == i).expand(b, -1, -1)
        elif rule == "bos":
            t = j == first[:, None, None]
        elif rule == "span":
            lo, hi = kw["spans"][..., 0].long(), kw["spans"][..., 1].long()
            t = (j >= lo[:, :, None]) & (j < hi[:, :, None])
        elif rule == "dup":
            ti, ri = tok_at(i)
            tj, rj = tok_at(j)
            t = (j < i) & ri & rj & (ti == tj)
        else:
            n = int(rule[5:])
            t = ((j - 1 < i) & (j - n >= 0) & (i - n + 1 >= 0)).expand(b, -1, -1)
            for m in range(n):
                ti, ri = tok_at(i - m)
                tj, rj = tok_at(j - 1 - m)
                t = t & ri & rj & (ti == tj)
        if rule not in ("bos", "self"):
            if "bos" in kw["exclude"]:
                t = t & (j != first[:, None, None])
            if "self" in kw["exclude"]:
                t = t & (j != i)
        t = t & allowed
        masses[rule] = (probs * t[:, None]).sum(-1)
        counts[rule] = t.sum(-1)
    out["mass"], out["count"] = masses, counts
    return out


def errors(got, ref) -> dict[str, float]:
    """Largest absolute error per statistic over rows that see a key; index mismatches away from ties."""
    real = ref["allowed"].any(-1)[:, None, :].expand_as(ref["lse"])
    err: dict[str, float] = {}

    def worst(a, b):
        return float((a.double() - b)[real].abs().max()) if bool(real.any()) else 0.0

    err["lse"] = worst(got.lse, ref["lse"])
    for name in ("max_prob", "entropy"):
        if getattr(got, name) is not None:
            err[name] = worst(getattr(got, name), ref[name])
    if got.argmax is not None:
        top2 = ref["probs"].topk(2, dim=-1).values
        clear = real & ((top2[..., 0] - top2[..., 1]) > 1e-4)
        err["argmax mismatches"] = float((got.argmax != ref["argmax"])[clear].sum())
    if got.topk_prob is not None and "topk_prob" in ref:
        realk = real[..., None].expand_as(ref["topk_prob"])
        err["topk_prob"] = float((got.topk_prob.double() - ref["topk_prob"])[realk].abs().max())
        p = ref["probs"]
        kk = ref["topk_prob"].shape[-1]
        nxt = p.topk(min(kk + 1, p.shape[-1]), dim=-1).values
        gaps = torch.cat([nxt[..., :-1] - nxt[..., 1:], torch.ones_like(nxt[..., :1])], -1)[..., :kk]
        clear = realk & (gaps > 1e-4) & (ref["topk_prob"] > 0)
        err["topk_index mismatches"] = float((got.topk_index != ref["topk_index"])[clear].sum())
    for rule, m in ref["mass"].items():
        err[f"mass {rule}"] = worst(got.mass[rule], m)
        err[f"count {rule} mismatches"] = float((got.n_targets[rule].to(ref["count"][rule].device)
                                                 != ref["count"][rule]).sum())
    return err


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--tiny", action="store_true", help="40 positions (a smoke run, e.g. on the CPU)")
    parser.add_argument("--out", type=Path, required=True, help="folder for triton_accuracy.json and .md")
    parser.add_argument("--tolerance", type=float, default=5e-5, help="largest error accepted (probabilities, lse)")
    args = parser.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: run this on a GPU machine, or --device cpu with TRITON_INTERPRET=1")
    from interp.kernels import triton_stats as T

    check_output(args.out, force=True)  # before any work: a folder that can take the results

    rows, failed = [], []
    start = time.perf_counter()
    for name, case in CASES.items():
        q, k, kw = make(case, args.device, args.tiny)
        ref = reference(q, k, kw)
        runs = {"triton (autotuned)": lambda q=q, k=k, kw=kw: attention_stats(q, k, **kw, backend="triton")}
        if name == "bf16 d128 G4 everything":  # every configuration of the head size's table
            p = check_problem(q, k, kw["scaling"], kw["rules"], kw["tokens"], kw["spans"], kw["rows"], kw["key_mask"],
                          kw["sliding_window"], kw["softcap"], kw["causal"], kw["topk"])
            for c in T.configs_for(128, torch.bfloat16):
                runs[f"triton {c.name}"] = lambda p=p, c=c, kw=kw: T.triton_attention_stats(
                    p, kw["rules"], kw["tokens"], kw["spans"], True, kw["topk"], tuple(kw["exclude"]), config=c)
        if name in ("smollm2 scan (fp32 d64 G3)", "8B scan (bf16 d128 G4)"):
            runs["torch path"] = lambda q=q, k=k, kw=kw: attention_stats(q, k, **kw, backend="torch", row_stats=False)
            runs["triton, masses only"] = lambda q=q, k=k, kw=kw: attention_stats(q, k, **kw, backend="triton",
                                                                                 row_stats=False)
        for run_name, fn in runs.items():
            t0 = time.perf_counter()
            try:
                got = fn()
                if args.device.startswith("cuda"):
                    torch.cuda.synchronize()
                err = errors(got, ref)
                status = "ok"
            except Exception as exc:  # noqa: BLE001 - reported per case, the check goes on
                err, status = {}, f"failed: {type(exc).__name__}: {str(exc).splitlines()[0][:160]}"
            bad = [key for key, v in err.items() if (v > 0 if "mismatches" in key else v > args.tolerance)]
            if bad or status != "ok":
                failed.append(f"{name} / {run_name}: {status if status != 'ok' else ', '.join(bad)}")
            rows.append({"case": name, "run": run_name, "status": status, "seconds": time.perf_counter() - t0,
                         "errors": err})
            print(json.dumps(rows[-1]), flush=True)
    device = torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu (Triton interpreter)"
    stats = sorted({key for r in rows for key in r["errors"] if not key.startswith(("mass ", "count "))})
    lines = [f"# Triton statistics against a dense float64 reference on {device}", "",
             f"torch {torch.__version__}; {len(rows)} runs in {time.perf_counter() - start:.0f} s; tolerance "
             f"{args.tolerance:g} (probabilities, log-sum-exp, entropy); index and count mismatches must be 0.", "",
             "| case | run | status | " + " | ".join(stats) + " | max mass error | count mismatches |",
             "|---|---|---|" + "---|" * (len(stats) + 2)]
    for r in rows:
        e = r["errors"]
        mass = max((v for key, v in e.items() if key.startswith("mass ")), default=float("nan"))
        cnt = sum(v for key, v in e.items() if key.startswith("count "))
        lines.append(f"| {r['case']} | {r['run']} | {r['status']} | "
                     + " | ".join(f"{e[s]:.1e}" if s in e else "—" for s in stats) + f" | {mass:.1e} | {cnt:.0f} |")
    lines += ["", "Failures: " + ("none" if not failed else "; ".join(failed))]
    # interp's output folder, written beside other files (logs, other tables), never over them
    with output_folder(args.out, kind="triton_accuracy", force=True) as dest:
        write_json(dest, "triton_accuracy.json", {"device": device, "rows": rows, "failed": failed})
        dest.write_text("triton_accuracy.md", "\n".join(lines) + "\n")
    print("\n".join(lines))
    if failed:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
