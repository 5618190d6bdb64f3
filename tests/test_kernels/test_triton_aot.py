"""The Triton kernels compiled for real GPUs (sm_80, sm_90) without one: the default scan's
specialisations on every run (benchmarks/triton_aot.py --scope scan: 8 specialisations, about 15 s
on 2 cores with a cold Triton cache), the full sweep when asked for (slow: INTERP_AOT_FULL=1), the
committed full table checked, and the scan scope checked against the launches a real scan makes."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "triton_aot.py"
HAS_TRITON = importlib.util.find_spec("triton") is not None
needs_triton = pytest.mark.skipif(not HAS_TRITON, reason="needs triton")


def _aot_module():
    if "triton_aot" in sys.modules:
        return sys.modules["triton_aot"]
    spec = importlib.util.spec_from_file_location("triton_aot", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["triton_aot"] = module  # dataclasses look their module up while it executes
    spec.loader.exec_module(module)
    return module


def _run_scope(scope: str, tmp_path: Path, timeout: float) -> tuple[list[dict], float, str]:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    out = tmp_path / f"aot_{scope}.md"
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, str(SCRIPT), "--scope", scope, "--jobs", str(min(os.cpu_count() or 1, 8)),
                           "--out", str(out), "--quiet"], capture_output=True, text=True, env=env, cwd=ROOT,
                          timeout=timeout)
    seconds = time.perf_counter() - start
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return _aot_module().read_json(out.with_suffix(".json")), seconds, out.read_text()


def _check_rows(rows: list[dict], aot) -> None:
    assert rows
    for r in rows:
        where = f"sm_{r['arch']} {r['case']['why']} {r['kernel']} {r.get('specialisation')}"
        assert "error" not in r, where + ": " + r.get("error", "")
        assert r["spill_stores"] == 0 and r["spill_loads"] == 0, where
        assert 0 < r["regs"] <= 255, where
        assert r["shared"] <= aot.LIMITS[r["arch"]]["smem_per_block"], where
        assert r["blocks_per_sm"] >= 1 and r["occupancy"] > 0, where
        assert r["loop_instructions"] > 0, where


@needs_triton
def test_default_scan_specialisations_compile_for_sm80_and_sm90(tmp_path):
    aot = _aot_module()
    rows, seconds, md = _run_scope("scan", tmp_path, timeout=600)
    _check_rows(rows, aot)
    assert {r["arch"] for r in rows} == {80, 90}
    assert {r["kernel"] for r in rows} == {"stats", "count"}
    stats = [r for r in rows if r["kernel"] == "stats"]
    assert all(r["loop_mma"] > 0 and r["loop_mufu"] > 0 for r in stats)  # tensor cores and exp2 in the key loop
    assert "0 compile errors, 0 with register spills" in md
    print(f"\nscan scope: {len(rows)} specialisations compiled in {seconds:.0f} s")


@needs_triton
@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("INTERP_AOT_FULL") != "1", reason="the full sweep (990 specialisations) takes "
                    "about 45 CPU-minutes: INTERP_AOT_FULL=1 to run it (its table: benchmarks/results/triton_aot.md)")
def test_full_sweep_compiles_without_spills(tmp_path):
    rows, _, _ = _run_scope("full", tmp_path, timeout=6 * 3600)
    _check_rows(rows, _aot_module())


@needs_triton
def test_committed_table_covers_the_full_scope():
    # The committed sweep lists every specialisation the full scope asks for, each without spills.
    aot = _aot_module()
    committed = aot.read_json(ROOT / "benchmarks" / "results" / "triton_aot.json")
    _check_rows(committed, aot)
    whys = {w for r in committed for w in r["launched_by"]}
    assert {c.why for c in aot.full_cases()} <= whys
    # Compiled with the block configurations of today's tables (rerun the sweep after changing them).
    shapes = {(r["case"]["dtype"], r["case"]["head_dim"], r["case"]["group"], tuple(r["case"]["config"]))
              for r in committed}
    assert {(c.dtype, c.head_dim, c.group, tuple(c.config)) for c in aot.full_cases()} <= shapes
    assert {(r["arch"], r["kernel"]) for r in committed} == {(80, "stats"), (90, "stats"), (80, "count"), (90, "count")}


def test_scan_scope_covers_what_a_scan_launches(monkeypatch):
    # Run a real (small) scan of every pattern score, record each attention_stats call of
    # head_stats, and turn it into the Triton launch it makes on CUDA for SmolLM2's shape.
    if not HAS_TRITON:
        pytest.skip("needs triton")
    sys.path.insert(0, str(ROOT / "tests"))
    try:
        from wired_models import CharTokenizer, wired_gpt2
    finally:
        sys.path.remove(str(ROOT / "tests"))
    import interp
    import interp.heads.kernel_stats as hs
    from interp.heads import scan
    from interp.heads.settings import PATTERN_SCORES
    from interp.kernels import triton_stats as T

    calls = []
    real = hs.attention_stats

    def record(q, k, **kw):
        calls.append({name: kw.get(name) for name in ("rules", "row_stats", "topk", "exclude", "sliding_window",
                                                      "softcap", "key_mask", "rows")} | {"causal": kw.get("causal", True)})
        return real(q, k, **kw)

    monkeypatch.setattr(hs, "attention_stats", record)
    model = interp.Model(wired_gpt2(), CharTokenizer(), name="wired-gpt2")
    scan(model, list(PATTERN_SCORES), lengths=(8,), samples=2, text_tokens=16, text_samples=1, causal_checks=False,
         progress=False)
    assert calls
    aot = _aot_module()
    h, kv, d = aot.SMOLLM2

    def constexprs(dtype, rules, row_stats, topk, exclude, causal, window, softcap, padding, config):
        c, o = T.kernel_constexprs(dtype=dtype, head_dim=d, group=h // kv, rules=rules, row_stats=row_stats,
                                   topk=topk, exclude=exclude, causal=causal, sliding_window=window, softcap=softcap,
                                   key_padding=padding, config=T.BlockConfig(*config))
        return json.dumps([sorted(c.items()), sorted(o.items())])

    compiled = {constexprs(getattr(torch, c.dtype), c.rules, c.row_stats, c.topk, c.exclude, c.causal, c.window,
                           c.softcap, c.padding, c.config) for c in aot.scan_cases()}
    for call in calls:
        for config in T.configs_for(d, torch.float32, rows=1024, group=h // kv):  # a scan's rows: every position
            key = constexprs(torch.float32, call["rules"], call["row_stats"], call["topk"], call["exclude"] or (),
                             call["causal"], call["sliding_window"] is not None, call["softcap"] is not None,
                             call["key_mask"] is not None, (config.block_m, config.block_n, config.num_warps,
                                                            config.num_stages, config.maxnreg))
            assert key in compiled, call
