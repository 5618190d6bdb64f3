"""Compile every Triton kernel specialisation for real GPUs (sm_80 and sm_90) without a GPU.

The Triton interpreter (``TRITON_INTERPRET=1``, how the tests run on the CPU) accepts code that
the real compiler rejects or compiles badly. This script runs Triton's real compiler (Triton IR
to PTX to a cubin, with the ptxas that ships with Triton) for A100 (sm_80) and H100/H200 (sm_90)
on every specialisation listed below, fails on any compile error, and records per
specialisation the registers per thread, spilled bytes, stack, shared memory and the resulting
occupancy.

What is compiled comes from the launch code itself: each case is turned into the kernel's
arguments by ``interp.kernels.triton_stats.prepare_launches`` (the function the CUDA launch calls,
fed small CPU tensors of the case's dtypes), and Triton's own launcher logic derives the
signature and attributes from them (``signature_of``). Every block configuration of the
autotune table (``AUTOTUNE``) and the few-rows one (``FEW_ROWS``) is compiled for its head size.

Scopes:
  scan   the launches of the default head scan (``interp heads smollm2-135m``): SmolLM2's shape
         (float32, d_head 64, 3 query heads per kv head), the repeated-random and natural-text
         rule sets, masses on every row, every block configuration. Fast (CI). (Retrieval's
         decoding steps use ``decode_argmax``, plain PyTorch; the causal checks no statistics.)
  full   every value of every axis: float32/bfloat16/float16, head sizes 64/128/256, the group
         sizes of the supported families (1-8), each rule set the toolkit uses, row statistics
         on/off, top-k 1..8, sliding window, soft-cap, key padding, non-causal, exclusions, and
         a worst case with everything on; every block configuration (``full_cases``).
  gpu-check  what benchmarks/gpu_check.sh launches (compiled there first, in parallel).

    python benchmarks/triton_aot.py                     # full sweep -> benchmarks/results/triton_aot.md
    python benchmarks/triton_aot.py --scope scan --out aot_scan.md
    python benchmarks/triton_aot.py --list --scope scan # the cases, nothing compiled
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results"
TARGETS = (80, 90)
DTYPES = ("float32", "bfloat16", "float16")
HEAD_SIZES = (64, 128, 256)

# Published shapes (query heads, kv heads, head size) of models of the supported families; their
# group sizes (query heads per kv head) are what the kernel's G takes.
FAMILY_SHAPES = {
    "SmolLM2-135M": (9, 3, 64), "SmolLM2-360M": (15, 5, 64), "SmolLM2-1.7B": (32, 32, 64),
    "GPT-2": (12, 12, 64), "Pythia-1B (GPT-NeoX)": (8, 8, 256),
    "Llama-3.2-1B": (32, 8, 64), "Llama-3.2-3B": (24, 8, 128), "Llama-3.1-8B": (32, 8, 128),
    "Llama-3.1-70B": (64, 8, 128), "Mistral-7B": (32, 8, 128),
    "Qwen2.5-0.5B": (14, 2, 64), "Qwen2.5-1.5B": (12, 2, 128), "Qwen2.5-3B": (16, 2, 128),
    "Qwen2.5-7B": (28, 4, 128), "Qwen2.5-14B": (40, 8, 128), "Qwen3-0.6B": (16, 8, 128), "Qwen3-8B": (32, 8, 128),
    "Gemma-3-270M": (4, 1, 256), "Gemma-3-4B": (8, 4, 256), "Gemma-3-12B": (16, 8, 256), "Gemma-3-27B": (32, 16, 128),
}
GROUPS = tuple(sorted({h // kv for h, kv, _ in FAMILY_SHAPES.values()}))
SMOLLM2 = FAMILY_SHAPES["SmolLM2-135M"]

# GPU limits per target (CUDA C Programming Guide, "Technical Specifications per Compute Capability").
LIMITS = {
    80: dict(name="A100 (sm_80)", regs_per_sm=65536, max_warps=64, max_blocks=32, smem_per_sm=167936,
             smem_per_block=166912),
    90: dict(name="H100/H200 (sm_90)", regs_per_sm=65536, max_warps=64, max_blocks=32, smem_per_sm=233472,
             smem_per_block=232448),
}
RESERVED_SMEM = 1024  # per block, by the CUDA runtime (sm_80 and later)


@dataclass(frozen=True)
class Case:
    """One launch situation: what the kernel is asked for, on which shape, with which block config."""

    why: str
    dtype: str
    head_dim: int
    group: int
    rules: tuple[str, ...] = ()
    row_stats: bool = False
    topk: int = 0
    exclude: tuple[str, ...] = ()
    causal: bool = True
    window: bool = False
    softcap: bool = False
    padding: bool = False
    decode: bool = False
    config: tuple = (0, 0, 0, 0, None)  # BlockConfig fields


def scan_rule_sets() -> dict[str, tuple[str, ...]]:
    """The rule sets the default head scan asks head_stats for (its two protocols).

    Built from the scan's own tables, as ``interp.heads.units.score_pattern_unit`` builds them: the
    rules of the wanted scores, plus bos and self, plus every n-gram order when ``ngram`` is
    scored (``tests/test_kernels/test_triton_aot.py`` checks them against a real scan's calls).
    """
    from interp.heads import scores as S
    from interp.heads.settings import NGRAM_ORDERS, RANDOM_SCORES, TEXT_SCORES

    def rules(wanted):
        out = {r for n in wanted for r in S.RULES_OF.get(n, [])} | {"bos", "self"}
        if "ngram" in wanted:
            out |= {f"ngram{k}" for k in NGRAM_ORDERS}
        return tuple(sorted(out))

    return {
        "scan: repeated random tokens": rules(RANDOM_SCORES),
        "scan: natural text": rules([n.removesuffix("_text") for n in TEXT_SCORES]),
    }


def _configs(head_dim: int, dtype: str, few_rows: bool | None) -> list[tuple[int, int, int, int]]:
    """Block configurations a launch may use: the autotune table's (``few_rows`` False), the
    few-rows one (True), or all of them (None)."""
    import torch

    from interp.kernels.triton_stats import configs_for

    dt = getattr(torch, dtype)
    out = []
    if few_rows is not True:
        out += list(configs_for(head_dim, dt))
    if few_rows is not False:
        out += [c for c in configs_for(head_dim, dt, rows=1, group=1) if c not in out]
    return [(c.block_m, c.block_n, c.num_warps, c.num_stages, c.maxnreg) for c in out]


def _supported(dtype: str, head_dim: int) -> bool:
    import torch

    from interp.kernels.triton_stats import triton_supports

    return triton_supports(getattr(torch, dtype), head_dim)


def scan_cases() -> list[Case]:
    """The default scan's launches on SmolLM2 (float32): its two rule sets, masses on every row,
    with the autotune table's configurations (retrieval's decoding steps take ``decode_argmax``,
    the causal checks no statistics)."""
    h, kv, d = SMOLLM2
    out = []
    for config in _configs(d, "float32", few_rows=False):
        for why, rules in scan_rule_sets().items():
            out.append(Case(why, "float32", d, h // kv, rules, config=config))
    return out


def full_cases() -> list[Case]:
    """Every value of every axis. For each dtype, head size and block configuration: the scan's
    natural-text rules at every family group size, the scan's other rule sets, and a worst case
    with every feature on (causal and not); a decoding row's statistics, alone and with every rule
    and top-8, at every group size with the few-rows configuration (the only one a single row
    launches with). The single-feature
    variants (each top-k size, window, soft-cap, padding, non-causal, exclusions, span) are
    compiled at the table's first configuration of each dtype and head size."""
    from interp.kernels.targets import RULES

    sets = scan_rule_sets()
    random_rules, text_rules = sets["scan: repeated random tokens"], sets["scan: natural text"]
    out = []
    for dtype in DTYPES:
        for d in HEAD_SIZES:
            if not _supported(dtype, d):
                continue  # backend="auto" takes the PyTorch path for these; "triton" refuses them
            few = set(_configs(d, dtype, few_rows=True))
            for i, config in enumerate(_configs(d, dtype, few_rows=None)):
                base = dict(dtype=dtype, head_dim=d, config=config)
                for g in GROUPS:
                    out.append(Case("scan: natural text", group=g, rules=text_rules, **base))
                    if config in few:  # one row x at most 8 heads: always the few-rows configuration
                        out.append(Case("row statistics of one decoding row", group=g, row_stats=True, decode=True,
                                        **base))
                        out.append(Case("one decoding row: every rule, top-8", group=g, rules=tuple(RULES),
                                        row_stats=True, topk=8, decode=True, **base))
                out.append(Case("scan: repeated random tokens", group=SMOLLM2[0] // SMOLLM2[1], rules=random_rules,
                                **base))
                out.append(Case("head_stats default rules", group=4, rules=("ngram1", "prev"), **base))
                out.append(Case("circuits.icl: span masses of chosen rows, padded", group=4, rules=("span",),
                                padding=True, **base))
                for causal in (True, False):
                    out.append(Case("worst case: every rule, top-8, every mask" + ("" if causal else ", non-causal"),
                                    group=max(GROUPS), rules=tuple(RULES), row_stats=True, topk=8,
                                    exclude=("bos", "self"), causal=causal, window=True, softcap=True, padding=True,
                                    **base))
                if i:
                    continue
                for k in range(1, 9):
                    out.append(Case(f"row statistics, top-{k}", group=4, rules=random_rules, row_stats=True, topk=k,
                                    **base))
                for flag in ("window", "softcap", "padding"):
                    out.append(Case(f"scan rules + {flag}", group=4, rules=text_rules, **{flag: True}, **base))
                out.append(Case("scan rules, non-causal", group=4, rules=text_rules, causal=False, **base))
                out.append(Case("scan rules, bos and self excluded", group=4, rules=text_rules,
                                exclude=("bos", "self"), **base))
                out.append(Case("span rule", group=4, rules=("span",), **base))
    return out


def gpu_check_cases() -> list[Case]:
    """What benchmarks/gpu_check.sh launches: the scan's cases, benchmarks/triton_accuracy.py's and
    benchmarks/triton_bandwidth.py's, and head_scan.py's interp method (compiled first, in parallel,
    so that the timed steps find them in Triton's cache)."""
    import triton_accuracy as acc
    import triton_bandwidth as bw

    out = list(scan_cases())
    for name, (dtype, d, h, hkv, pos, window, softcap, padded, causal, rules, topk, exclude, rows) in acc.CASES.items():
        n_rows = pos if rows is None else len(rows)
        few = n_rows * (h // hkv) <= 32
        flags = dict(window=window is not None, softcap=softcap is not None, padding=padded, causal=causal,
                     exclude=tuple(exclude), decode=rows is not None and len(rows) == 1)
        for config in _configs(d, dtype, few_rows=few):
            out.append(Case(f"accuracy: {name}", dtype, d, h // hkv, tuple(rules), row_stats=True, topk=topk,
                            config=config, **flags))
            out.append(Case(f"accuracy: {name}, masses only", dtype, d, h // hkv, tuple(rules), config=config,
                            **flags))
    for shape, (h, hkv, d, dtype) in bw.SHAPES.items():
        name = str(dtype).removeprefix("torch.")
        for config in _configs(d, name, few_rows=False):
            out.append(Case(f"bandwidth: {shape}", name, d, h // hkv, tuple(sorted(bw.RULES)), config=config))
    h, kv, d = SMOLLM2
    for config in _configs(d, "float32", few_rows=False):
        out.append(Case("head_scan.py: interp", "float32", d, h // kv, ("ngram1", "prev"), config=config))
    return out


def cases(scope: str) -> list[Case]:
    return {"scan": scan_cases, "full": full_cases, "gpu-check": gpu_check_cases}[scope]()


# -- worker side: compile one case for one target ---------------------------------------------------


def _init_worker() -> None:
    os.environ.pop("TRITON_INTERPRET", None)  # the real compiler, never the interpreter
    warnings.filterwarnings("ignore")
    if sys.platform == "linux":  # a worker ends with the sweep that started it (a timeout kills the parent)
        try:
            import ctypes
            import signal

            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass


def launches_of(case: Case):
    """The kernel launches ``case`` makes (statistics, target counts), built by the launch code
    from small CPU tensors."""
    import torch

    from interp.kernels.attention_stats import check_problem
    from interp.kernels.triton_stats import BlockConfig, prepare_launches

    dtype = getattr(torch, case.dtype)
    pos = 16
    q = torch.zeros(1, case.group, 1 if case.decode else pos, case.head_dim, dtype=dtype)
    k = torch.zeros(1, 1, pos, case.head_dim, dtype=dtype)
    tokens = torch.zeros(1, pos, dtype=torch.long)
    rows = q.shape[2]
    spans = torch.zeros(1, rows, 2, dtype=torch.long) if "span" in case.rules else None
    key_mask = torch.ones(1, pos, dtype=torch.bool) if case.padding else None
    problem = check_problem(q, k, 0.125, case.rules, tokens, spans, None, key_mask, 8 if case.window else None,
                        30.0 if case.softcap else None, case.causal, case.topk)
    stats, count = prepare_launches(problem, list(case.rules), tokens, spans, case.row_stats, case.topk,
                                    case.exclude, BlockConfig(*case.config))
    return {"stats": stats, "count": count} if case.rules else {"stats": stats}


def _ptxas_report(ptx: str, arch: int, fp_fusion: bool, log: str | None = None) -> dict[str, int]:
    """Registers, spills and stack from ptxas's verbose log: ``log`` (Triton's own ptxas run, which
    is verbose), or else the ptxas Triton uses for ``arch`` run again on the PTX with its options."""
    from triton.backends.nvidia.compiler import get_ptxas, sm_arch_from_capability

    if log is None or not re.search(r"Used \d+ registers", log):
        with tempfile.TemporaryDirectory() as tmp:
            src = Path(tmp) / "kernel.ptx"
            src.write_text(ptx)
            cmd = [get_ptxas(arch).path, "-lineinfo", *([] if fp_fusion else ["--fmad=false"]), "-v",
                   "--regAllocOptLevel=2", f"--gpu-name={sm_arch_from_capability(arch)}", str(src), "-o",
                   str(Path(tmp) / "kernel.o")]
            log = subprocess.run(cmd, capture_output=True, text=True, check=True).stderr
    regs = re.search(r"Used (\d+) registers", log)
    spill = re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads", log)
    return {"regs": int(regs.group(1)) if regs else -1,
            "stack": int(spill.group(1)) if spill else 0,
            "spill_stores": int(spill.group(2)) if spill else 0,
            "spill_loads": int(spill.group(3)) if spill else 0}


def occupancy(regs: int, warps: int, shared: int, arch: int) -> dict[str, Any]:
    """Resident blocks per SM and the share of the SM's warp slots they fill, with the limiting resource."""
    lim = LIMITS[arch]
    regs_per_warp = -(-max(regs, 1) * 32 // 256) * 256  # allocated per warp in units of 256
    by = {
        "registers": (lim["regs_per_sm"] // regs_per_warp) // warps,
        "shared memory": lim["smem_per_sm"] // (shared + RESERVED_SMEM),
        "warps": lim["max_warps"] // warps,
        "blocks": lim["max_blocks"],
    }
    blocks = min(by.values())
    limiter = min(by, key=lambda k: by[k])
    return {"blocks_per_sm": blocks, "occupancy": blocks * warps / lim["max_warps"], "limiter": limiter}


def job_key(job: tuple[Case, str, int]) -> dict[str, Any]:
    """The specialisation a job compiles: Triton's signature, constexprs, attributes and options."""
    case, kernel_name, arch = job
    _init_worker()
    from triton.backends.compiler import GPUTarget

    from interp.kernels.triton_stats import signature_of, specialisation_name

    launch = launches_of(case)[kernel_name]
    signature, constexprs, attrs, options = signature_of(launch, GPUTarget("cuda", arch, 32))
    key = json.dumps([arch, kernel_name, sorted(signature.items()), sorted((str(k), str(v)) for k, v in constexprs.items()),
                      sorted((str(k), str(v)) for k, v in attrs.items()),
                      [options["num_warps"], options["num_stages"], options.get("maxnreg")]])
    return {"key": key, "specialisation": specialisation_name(kernel_name, launch.constexprs)}


def loop_profile(cubin: bytes) -> dict[str, int]:
    """Instructions of the key loop (the longest loop) in the cubin's SASS: all, MUFU
    (exp2 and friends), tensor-core MMA, global loads; per warp and iteration."""
    from triton import knobs

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "kernel.cubin"
        path.write_bytes(cubin)
        sass = subprocess.run([knobs.nvidia.cuobjdump.path, "-sass", str(path)], capture_output=True, text=True,
                              check=True).stdout
    found = []
    for line in sass.splitlines():
        m = re.search(r"/\*([0-9a-f]{4,})\*/\s+(.*?)\s*;", line)
        if m:
            found.append((int(m.group(1), 16), re.sub(r"^@!?U?P\w+\s+", "", m.group(2).strip())))
    # A loop: a backward branch whose range holds no EXIT. (The slow paths of warp shuffles under
    # divergence, BRA.DIV targets placed after the kernel's end, branch back into the body over
    # its EXIT: not loops.)
    exits = [addr for addr, text in found if text.split()[0] == "EXIT"]
    loops = []
    for addr, text in found:
        b = re.match(r"BRA\s+(?:\w+\s+)?0x([0-9a-f]+)", text)
        if b and int(b.group(1), 16) < addr and not any(int(b.group(1), 16) <= e <= addr for e in exits):
            loops.append((int(b.group(1), 16), addr))
    if not loops:
        return {"loop_instructions": 0, "loop_mufu": 0, "loop_mma": 0, "loop_loads": 0}
    lo, hi = max(loops, key=lambda x: x[1] - x[0])
    body = [t.split()[0] for a, t in found if lo <= a <= hi]
    return {"loop_instructions": len(body), "loop_mufu": sum(op.startswith("MUFU") for op in body),
            "loop_mma": sum(op.startswith(("HMMA", "HGMMA")) for op in body),
            "loop_loads": sum(op.startswith(("LDG", "LDGSTS")) for op in body)}


def compile_case(job: tuple[Case, str, int]) -> dict[str, Any]:
    """Compile one kernel of one case for one target; a dict of resources, or of the error."""
    case, kernel_name, arch = job
    _init_worker()
    from triton import knobs
    from triton.backends.compiler import GPUTarget

    from interp.kernels.triton_stats import compile_launch

    row: dict[str, Any] = {"case": asdict(case), "kernel": kernel_name, "arch": arch}
    start = time.perf_counter()
    try:
        launch = launches_of(case)[kernel_name]
        # Triton runs ptxas verbose and prints its log when asked: no second ptxas run (a kernel
        # found in Triton's cache has no log; then ptxas runs again on its PTX).
        knobs.nvidia.dump_ptxas_log = True
        log = io.StringIO()
        with contextlib.redirect_stdout(log):
            kernel = compile_launch(launch, GPUTarget("cuda", arch, 32))
        meta = kernel.metadata
        res = _ptxas_report(kernel.asm["ptx"], arch, meta.enable_fp_fusion, log.getvalue())
        row["from_cache"] = "Used " not in log.getvalue()
        row.update(res, shared=int(meta.shared), num_warps=int(meta.num_warps), num_stages=int(meta.num_stages),
                   block_m=launch.constexprs["BLOCK_M"], block_n=launch.constexprs["BLOCK_N"])
        row.update(occupancy(res["regs"], meta.num_warps, meta.shared, arch))
        row.update(loop_profile(kernel.asm["cubin"]))
        lim = LIMITS[arch]
        if meta.shared > lim["smem_per_block"]:
            row["error"] = f"shared memory {meta.shared} B exceeds the {lim['smem_per_block']} B a block may use"
    except Exception as exc:  # noqa: BLE001 - every failure is reported, the sweep goes on
        text = str(exc).strip()
        row["error"] = f"{type(exc).__name__}: {text.splitlines()[0][:300] if text else ''}"
    row["seconds"] = time.perf_counter() - start
    return row


# -- parent side --------------------------------------------------------------------------------------


def run(scope: str, targets: tuple[int, ...], jobs: int, progress: bool = True) -> list[dict[str, Any]]:
    """Compile every distinct specialisation of the scope's cases once; one row per (case, kernel, target)."""
    import multiprocessing as mp

    work = [(c, kernel, a) for c in cases(scope) for kernel in (("stats", "count") if c.rules else ("stats",))
            for a in targets]
    keys = [job_key(job) for job in work]
    first: dict[str, int] = {}
    for i, k in enumerate(keys):
        first.setdefault(k["key"], i)
    unique = sorted(first.values())
    compiled: dict[str, dict[str, Any]] = {}
    ctx = mp.get_context("spawn")
    with ProcessPoolExecutor(max_workers=jobs, mp_context=ctx, initializer=_init_worker) as pool:
        for n, (i, row) in enumerate(zip(unique, pool.map(compile_case, [work[i] for i in unique], chunksize=1),
                                         strict=True)):
            row.update(keys[i])
            compiled[keys[i]["key"]] = row
            if progress:
                status = row.get("error") or (f"{row['regs']} regs, {row['spill_stores']} B spilled, "
                                              f"{row['shared']} B smem")
                print(f"[{n + 1}/{len(unique)}] sm_{row['arch']} {_case_text(row)}: {status}", flush=True)
    rows = []
    for job, k in zip(work, keys, strict=True):
        case, kernel, arch = job
        rows.append({**compiled[k["key"]], "case": asdict(case), "kernel": kernel, "arch": arch, **k})
    return rows


def _cfg(c) -> str:
    """BLOCK_M-BLOCK_N-warps-stages, and the register limit where it is not the usual 255."""
    return f"M{c[0]}-N{c[1]}-w{c[2]}-s{c[3]}" + ("" if len(c) < 5 or c[4] == 255 else f"-r{c[4] or 'ptxas'}")


def _known_spill(row: dict[str, Any]) -> str | None:
    """The reason a spilling specialisation is accepted, or None (then the sweep fails)."""
    return None


def distinct(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per compiled specialisation, listing every case that launches it."""
    by_key: dict[str, dict[str, Any]] = {}
    for row in rows:
        key = row.get("key") or json.dumps([row["arch"], row["case"]])
        if key in by_key:
            whys = by_key[key]["launched_by"]
            if row["case"]["why"] not in whys:
                whys.append(row["case"]["why"])
        else:
            by_key[key] = {**row, "launched_by": [row["case"]["why"]]}
    return list(by_key.values())


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min"


def markdown(rows: list[dict[str, Any]], scope: str, seconds: float, cpu_seconds: float, jobs: int) -> str:
    import torch
    import triton

    specs = distinct(rows)
    ok = [r for r in specs if "error" not in r]
    errors = [r for r in specs if "error" in r]
    spills = [r for r in ok if r["spill_stores"] or r["spill_loads"]]
    stats = [r for r in ok if r["kernel"] == "stats"]
    counts = [r for r in ok if r["kernel"] == "count"]
    archs = sorted({r["arch"] for r in rows})
    command = "python benchmarks/triton_aot.py" + ("" if scope == "full" else f" --scope {scope}")
    lines = [
        "# Triton kernels compiled ahead of time for " + " and ".join(f"sm_{a}" for a in archs),
        "",
        f"`{command}` (Triton {triton.__version__}, torch {torch.__version__}; no GPU needed): {len(rows)} "
        f"(case, kernel, target) launches, {len(specs)} distinct specialisations ({len(stats)} of the statistics "
        f"kernel, {len(counts)} of the target-count kernel), {len(errors)} compile errors, {len(spills)} with "
        f"register spills; {_duration(seconds)} of wall time with {jobs} parallel compiles on {os.cpu_count()} "
        f"cores ({_duration(cpu_seconds)} of CPU time in all; wall time grows when other work shares the cores); "
        f"{sum(bool(r.get('from_cache')) for r in specs)} of the {len(specs)} were found in Triton's cache.",
        "",
        "Each specialisation went through Triton's real compiler (Triton IR -> PTX -> cubin) for its target, "
        "from the arguments the launch code itself builds (`prepare_launches`) and the signature Triton's "
        "launcher derives from them (`signature_of`). Registers, spilled bytes and stack come from the ptxas that "
        "ships with Triton, run verbose on that PTX; shared memory is the compiled kernel's. Occupancy: resident "
        "blocks per SM from registers (allocated per warp in units of 256), shared memory (plus the 1 KiB the "
        "runtime reserves per block), the 64 warp slots and 32 blocks per SM, shown as the share of warp slots "
        "filled and the resource that limits it. Key loop: SASS instructions per warp and key block (MUFU: exp2 "
        "and other special functions; MMA: tensor-core instructions).",
        "",
        "Targets: " + "; ".join(f"sm_{a}: {LIMITS[a]['name']}, at most {LIMITS[a]['smem_per_block'] // 1024} KiB "
                                 f"shared memory per block, {LIMITS[a]['smem_per_sm'] // 1024} KiB per SM" for a in archs)
        + ".",
        "",
        "Block configurations are written BLOCK_M-BLOCK_N-warps-stages ((row, head) pairs per program, keys per "
        "step, warps, pipeline stages); each sets ptxas's register limit to 255 (`maxnreg` of "
        "`triton_stats.BlockConfig`; another limit would be shown as -r<limit>).",
        "",
        "Not compiled: float32 inputs with head sizes above 64, which `backend=\"auto\"` sends to the PyTorch "
        "path on CUDA (`triton_stats.triton_supports`: their three-TF32 product does not fit the registers).",
        "",
    ]
    if errors:
        lines += ["## Compile errors", "", "| target | case | error |", "|---|---|---|"]
        lines += [f"| sm_{r['arch']} | {_case_text(r)} | {r['error']} |" for r in errors]
        lines.append("")
    if spills:
        lines += ["## Spills", "", "| target | case | spill stores/loads (B) | reason |", "|---|---|---|---|"]
        lines += [f"| sm_{r['arch']} | {_case_text(r)} | {r['spill_stores']}/{r['spill_loads']} | "
                  f"{_known_spill(r) or 'none known: fix the block configuration'} |" for r in spills]
        lines.append("")
    lines += ["## Statistics kernel: summary per target, dtype, head size and block configuration", "",
              "| target | dtype | d_head | config (BLOCK_M-BLOCK_N-warps-stages[-register limit]) | specialisations | registers (max) | "
              "spilled bytes | shared memory (max, B) | occupancy (lowest) | key loop instructions (max) |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in stats:
        c = r["case"]
        groups.setdefault((r["arch"], c["dtype"], c["head_dim"], tuple(c["config"])), []).append(r)
    for (arch, dtype, d, cfg), rs in sorted(groups.items()):
        lines.append(f"| sm_{arch} | {dtype} | {d} | {_cfg(cfg)} | {len(rs)} | {max(r['regs'] for r in rs)} | "
                     f"{sum(r['spill_stores'] for r in rs)} | {max(r['shared'] for r in rs)} | "
                     f"{min(r['occupancy'] for r in rs):.0%} | {max(r['loop_instructions'] for r in rs)} |")
    lines += ["", "## Target-count kernel (tokens and masks only: once per forward pass, not per layer or head)", "",
              "| target | counts | registers | spill st/ld (B) | shared (B) | occupancy (limit) | key loop instructions "
              "| launched by |", "|---|---|---|---|---|---|---|---|"]
    for r in sorted(counts, key=lambda r: (r["arch"], r["specialisation"])):
        lines.append(f"| sm_{r['arch']} | {r['specialisation']} | {r['regs']} | {r['spill_stores']}/{r['spill_loads']} | "
                     f"{r['shared']} | {r['occupancy']:.0%} ({r['limiter']}) | {r['loop_instructions']} | "
                     f"{'; '.join(r['launched_by'])} |")
    lines += ["", "## Statistics kernel: every specialisation", "",
              "| target | dtype | d_head | G | config | kernel asked for | registers | spill st/ld (B) | stack (B) | "
              "shared (B) | blocks/SM | occupancy (limit) | key loop: instr / MUFU / MMA | launched by |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(stats, key=lambda r: (r["arch"], r["case"]["dtype"], r["case"]["head_dim"], r["case"]["config"],
                                          r["case"]["group"], r["specialisation"])):
        c = r["case"]
        lines.append(
            f"| sm_{r['arch']} | {c['dtype']} | {c['head_dim']} | {c['group']} | {_cfg(c['config'])} | "
            f"{r['specialisation']} | {r['regs']} | {r['spill_stores']}/{r['spill_loads']} | {r['stack']} | "
            f"{r['shared']} | {r['blocks_per_sm']} | {r['occupancy']:.0%} ({r['limiter']}) | "
            f"{r['loop_instructions']} / {r['loop_mufu']} / {r['loop_mma']} | {'; '.join(r['launched_by'])} |")
    return "\n".join(lines) + "\n"


JSON_COLUMNS = ("arch", "kernel", "dtype", "head_dim", "group", "config", "specialisation", "launched_by", "error",
                "regs", "spill_stores", "spill_loads", "stack", "shared", "num_warps", "num_stages", "block_m",
                "block_n", "blocks_per_sm", "occupancy", "limiter", "loop_instructions", "loop_mufu", "loop_mma",
                "loop_loads")
CASE_FIELDS = ("dtype", "head_dim", "group", "config")


def json_text(specs: list[dict[str, Any]]) -> str:
    """One row per specialisation, column-oriented (``read_json`` turns it back into dicts);
    ``launched_by`` as indices into ``whys``. Strict JSON (``interp.results.strict_json``), one row a line."""
    from interp.results.strict_json import dumps

    whys = sorted({w for r in specs for w in r["launched_by"]})
    rows = []
    for r in specs:
        flat = {**{k: r["case"][k] for k in CASE_FIELDS}, **r, "launched_by": [whys.index(w) for w in r["launched_by"]]}
        if isinstance(flat.get("occupancy"), float):
            flat["occupancy"] = round(flat["occupancy"], 4)
        rows.append([flat.get(k) for k in JSON_COLUMNS])
    return ('{"columns": ' + dumps(JSON_COLUMNS) + ',\n"whys": ' + dumps(whys, indent=0)
            + ',\n"rows": [\n' + ",\n".join(dumps(row, separators=(",", ":")) for row in rows) + "\n]}\n")


def read_json(path: Path) -> list[dict[str, Any]]:
    """The rows ``write_json`` wrote, as dicts (``case``: the fields of the case; ``launched_by``: the whys)."""
    data = json.loads(Path(path).read_text())
    out = []
    for values in data["rows"]:
        r = {k: v for k, v in zip(data["columns"], values, strict=True) if v is not None}
        r["launched_by"] = [data["whys"][i] for i in r["launched_by"]]
        r["case"] = {k: r.pop(k) for k in CASE_FIELDS}
        r["case"]["why"] = r["launched_by"][0]
        out.append(r)
    return out


def _case_text(row: dict[str, Any]) -> str:
    c = row["case"]
    if row["kernel"] == "count":
        return f"{c['why']}: count kernel ({row.get('specialisation', '')})"
    return f"{c['why']}: {c['dtype']} d{c['head_dim']} G{c['group']} {_cfg(c['config'])} ({row.get('specialisation', '')})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scope", choices=["scan", "full", "gpu-check"], default="full")
    parser.add_argument("--targets", default=",".join(map(str, TARGETS)), help="compute capabilities (default 80,90)")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="compiles in parallel")
    parser.add_argument("--out", type=Path, help="Markdown table (default: benchmarks/results/triton_aot.md for "
                        "the full scope; none for others); a .json with every row is written beside it")
    parser.add_argument("--list", action="store_true", help="print the cases and exit")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    if args.list:
        for c in cases(args.scope):
            print(json.dumps(asdict(c)))
        return 0
    _init_worker()
    targets = tuple(int(t) for t in args.targets.split(","))
    start = time.perf_counter()
    rows = run(args.scope, targets, max(1, args.jobs), progress=not args.quiet)
    seconds = time.perf_counter() - start
    usage = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    cpu_seconds = sum(u.ru_utime + u.ru_stime for u in usage)
    out = args.out or (RESULTS / "triton_aot.md" if args.scope == "full" else None)
    specs = distinct(rows)
    errors = [r for r in specs if "error" in r]
    spills = [r for r in specs if "error" not in r and (r["spill_stores"] or r["spill_loads"]) and not _known_spill(r)]
    if out is not None:
        from interp.results.folders import kind_for, output_folder

        # interp's output folder, written beside other files (logs, other tables), never over them
        with output_folder(out.parent, kind=kind_for(out.stem), force=True) as dest:
            dest.write_text(out.name, markdown(rows, args.scope, seconds, cpu_seconds, max(1, args.jobs)))
            dest.write_text(out.with_suffix(".json").name, json_text(specs))
    ok = [r for r in specs if "error" not in r]
    summary = {"compiles": len(rows), "specialisations": len(specs), "errors": len(errors),
               "unexplained_spills": len(spills), "max_regs": max((r["regs"] for r in ok), default=0),
               "max_shared": max((r["shared"] for r in ok), default=0), "seconds": round(seconds, 1),
               "cpu_seconds": round(cpu_seconds, 1)}
    print(json.dumps(summary))
    for r in errors:
        print(f"compile error: sm_{r['arch']} {_case_text(r)}: {r['error']}", file=sys.stderr)
    for r in spills:
        print(f"spills: sm_{r['arch']} {_case_text(r)}: {r['spill_stores']} B", file=sys.stderr)
    return 1 if errors or spills else 0


if __name__ == "__main__":
    sys.exit(main())
