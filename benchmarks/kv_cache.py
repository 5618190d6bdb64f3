"""Head-wise KV cache against the full cache, StreamingLLM and kvpress, on a needle prompt (CPU).

    python benchmarks/kv_cache.py --model smollm2-135m --tokens 2000,4000,8000
    python benchmarks/kv_cache.py --model gemma3-270m --tokens 8000,16000
    python benchmarks/kv_cache.py --shapes          # Llama-3.1-8B/70B-shaped cache bytes, meta device
    python benchmarks/kv_cache.py --render          # the table again from kv_cache_cpu.json

One needle (the first shipped one) in the shipped text at two depths per size. Rows:

- ``full``: the model's own ``DynamicCache``, prefill in one forward (plain ``generate``'s default);
- ``full_chunked``: the same cache, prefill in chunks of ``--chunk`` as the head-wise rows do
  (what chunking alone saves, apart from the cache);
- ``headwise50`` / ``headwise25``: ``interp.heads.headwise_cache`` with 50% / 25% of the kv heads
  (outside sliding-window layers) kept full, chosen by the committed retrieval scan
  (``case_studies/results/head_scans``), sink 4, window 256, prefill in chunks of ``--chunk``;
- ``streamingllm``: every kv head sink 4 + a window sized to ``headwise25``'s cache bytes, real
  eviction (the same cache class with no head kept full);
- ``kvpress``: kvpress's ``DuoAttentionPress`` with ``headwise25``'s pattern, on the same model
  folder in the same venv and run. kvpress 0.5.5 pins transformers < 5.3, so the table comes from a
  venv with both: ``pip install kvpress==0.5.5 "transformers<5.3"`` beside interp (every row then
  runs under that transformers, printed in the table).

Each row runs in its own subprocess: peak RSS is that process's ``ru_maxrss`` (model included),
prefill seconds the prompt's forward(s), decoding ms per token the median of three runs of
``--new-tokens`` greedy steps (each continuing the last), recall ROUGE-1 of the answer in the
first run's text. Rows accumulate in ``benchmarks/results/kv_cache_cpu.json`` (a row measured
again replaces its old self) and the table is written beside it as ``kv_cache_cpu.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
STEM = "kv_cache_cpu"
SCANS = Path(__file__).parent.parent / "case_studies" / "results" / "head_scans"
ROWS = ("full", "full_chunked", "headwise50", "headwise25", "streamingllm", "kvpress", "compressed25")
# The held-out check: a needle and a text the project never used (Python's own reference
# documentation, which every CPython ships as pydoc_data.topics).
HELDOUT = {"needle": "The harbour master keeps the spare key to the boathouse inside a hollow copy of Moby Dick.",
           "question": "Where does the harbour master keep the spare key to the boathouse?",
           "answer": "inside a hollow copy of Moby Dick"}
SHARES = {"headwise50": 0.5, "headwise25": 0.25}
SINK, WINDOW = 4, 256
COMMAND = "python benchmarks/kv_cache.py"


def _rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


# -- one row, in a child process (interp's venv) ---------------------------------------------------

def _prompt(model, tokens: int, depth: float, text: str = "shipped"):
    from interp.heads.retrieval import build_test, haystack_ids
    from interp.heads.settings import default_needles

    if text == "heldout":
        from pydoc_data.topics import topics

        prose = "\n\n".join(topics[k] for k in sorted(topics))
        hay = model.tokenizer(prose, add_special_tokens=False)["input_ids"]
        return build_test(model, HELDOUT, tokens, depth, hay=hay)
    return build_test(model, default_needles()[0], tokens, depth, hay=haystack_ids(model))


def _keep(model, share: float):
    from interp.heads.table import HeadScores

    return HeadScores.load(SCANS / model.name).keep_full("retrieval", share, model=model)


def _decode(model, out, cache, n_new: int, chunk_kw: dict) -> tuple[list[int], list[float]]:
    from interp.core.kv_cache import run_cached

    nxt = out.logits[:, -1].argmax(-1, keepdim=True)
    tokens, times = [int(nxt)], []
    for _ in range(n_new - 1):
        t = time.perf_counter()
        out, cache = run_cached(model.hf, cache, input_ids=nxt, **chunk_kw)
        nxt = out.logits[:, -1].argmax(-1, keepdim=True)
        times.append(time.perf_counter() - t)
        tokens.append(int(nxt))
    return tokens, times


def child(spec: dict) -> dict:
    """Measure one row in this process."""
    import numpy as np
    import torch

    import interp
    from interp.core.kv_cache import run_cached
    from interp.heads.compression import compressed
    from interp.heads.headwise import full_cache_bytes, headwise_cache
    from interp.heads.retrieval import rouge1_recall

    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    model = interp.load(spec["model"])
    test = _prompt(model, spec["tokens"], spec["depth"], spec.get("text", "shipped"))
    ids = test.prompt_ids
    n = ids.shape[1]
    row = spec["row"]
    keep25 = _keep(model, 0.25)
    if spec.get("save"):  # the prompt and pattern for the kvpress row
        np.save(Path(spec["save"]) / "ids.npy", ids.numpy())
        np.save(Path(spec["save"]) / "keep.npy", keep25)
    edit = contextlib.nullcontext()
    chunked = row != "full" and row != "compressed25"
    if row == "full":
        cache = None
    elif row == "full_chunked":
        from transformers import DynamicCache

        cache = DynamicCache(config=model.hf.config)
    elif row == "compressed25":  # the same heads dropped through the mask: a full cache
        cache, edit = None, compressed(model, keep25, sink=SINK, window=WINDOW)
    elif row in SHARES:
        cache = headwise_cache(model, _keep(model, SHARES[row]), SINK, WINDOW)
    elif row == "streamingllm":  # every head the same window, at headwise25's bytes
        window = _streaming_window(model, keep25, n + spec["new_tokens"] - 1)
        cache = headwise_cache(model, np.zeros_like(keep25), SINK, window)
    else:
        raise SystemExit(f"unknown row {row!r}; rows: {', '.join(ROWS)}")
    rss_loaded = _rss()
    with torch.no_grad(), edit:
        start = time.perf_counter()
        if not chunked:
            out, cache = run_cached(model.hf, cache, input_ids=ids, logits_to_keep=1)
        else:
            for s in range(0, n, spec["chunk"]):
                out, cache = run_cached(model.hf, cache, input_ids=ids[:, s:s + spec["chunk"]], logits_to_keep=1)
        prefill = time.perf_counter() - start
        tokens, times = _decode(model, out, cache, spec["new_tokens"], {})
        rss = _rss()
        held = cache.nbytes() if hasattr(cache, "nbytes") else sum(x.nbytes for layer in cache.layers
                                                                   for x in (layer.keys, layer.values))
        per_run = [statistics.mean(times)]
        last = torch.tensor([[tokens[-1]]])
        for _ in range(2):
            more, more_times = _decode(model, run_cached(model.hf, cache, input_ids=last)[0], cache,
                                       spec["new_tokens"], {})
            per_run.append(statistics.mean(more_times))
            last = torch.tensor([[more[-1]]])
    text = model.tokenizer.decode(tokens)
    return {**spec, "prompt_tokens": n, "cache_bytes": held,
            "full_cache_bytes": full_cache_bytes(model, n + spec["new_tokens"] - 1),
            "peak_rss": rss, "rss_loaded": rss_loaded, "prefill_s": prefill,
            "decode_ms": 1000 * statistics.median(per_run), "decode_runs_ms": [1000 * x for x in per_run],
            "recall": rouge1_recall(test.answer, text), "output": text, "tokens_out": tokens,
            "window": getattr(cache, "window", None), "transformers": _version("transformers"),
            "folder": str(model.hf.config._name_or_path), "answer": test.answer, "load": os.getloadavg()[0]}


def _streaming_window(model, keep, n: int) -> int:
    """The window giving every unbounded kv head the keys ``keep`` holds on average at ``n`` tokens."""
    from interp.heads.compression import sliding_windows

    bounded = sliding_windows(model)
    free = [la for la in range(model.cfg.n_layers) if la not in bounded]
    heads = len(free) * model.cfg.n_kv_heads
    full = int(keep[free].sum())
    per_head = (full * n + (heads - full) * (SINK + WINDOW - 1)) / heads
    return max(1, int(round(per_head)) - SINK + 1)


def _version(name: str) -> str:
    from importlib.metadata import version

    return version(name)


# -- the kvpress row: the plain Hugging Face model under kvpress's press -------------------------

def kvpress_child(spec: dict) -> dict:
    """DuoAttentionPress with a given streaming pattern on the model folder interp cached."""
    import numpy as np
    import torch
    from kvpress import DuoAttentionPress
    from transformers import AutoModelForCausalLM, AutoTokenizer, DynamicCache

    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    model = AutoModelForCausalLM.from_pretrained(spec["folder"], dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(spec["folder"])
    ids = torch.from_numpy(np.load(Path(spec["save"]) / "ids.npy"))
    keep = np.load(Path(spec["save"]) / "keep.npy")

    class GivenPattern(DuoAttentionPress):  # kvpress would download a released pattern by the model's name
        def post_init_from_model(self, model):
            self.sink_size, self.recent_size = SINK, WINDOW
            self.streaming_mask = torch.from_numpy(~keep)  # [layers, kv_heads]: True streams

    press = GivenPattern(head_compression_ratio=float((~keep).mean()))
    rss_loaded = _rss()
    times: list[float] = []
    with torch.no_grad(), press(model):
        start = time.perf_counter()
        # the press's hook reads the cache from the forward's arguments; built from the config as
        # generate builds it, so sliding-window layers keep only their window
        cache = DynamicCache(config=model.config)
        out = model(input_ids=ids, past_key_values=cache, use_cache=True, logits_to_keep=1)
        prefill = time.perf_counter() - start
        held = sum(layer.keys.nbytes + layer.values.nbytes for layer in cache.layers)
        nxt = out.logits[:, -1].argmax(-1, keepdim=True)
        tokens = [int(nxt)]
        per_run = []
        for run in range(3):
            times = []
            for _ in range(spec["new_tokens"] - (1 if run == 0 else 0)):
                t = time.perf_counter()
                out = model(input_ids=nxt, past_key_values=cache, use_cache=True)
                nxt = out.logits[:, -1].argmax(-1, keepdim=True)
                times.append(time.perf_counter() - t)
                if run == 0:
                    tokens.append(int(nxt))
            per_run.append(statistics.mean(times))
            if run == 0:
                rss = _rss()
    text = tok.decode(tokens)  # its recall is scored by the parent, with interp's rouge1_recall
    return {**{k: v for k, v in spec.items() if k not in ("folder", "save", "answer")}, "prompt_tokens": ids.shape[1],
            "cache_bytes": held, "peak_rss": rss, "rss_loaded": rss_loaded, "prefill_s": prefill,
            "decode_ms": 1000 * statistics.median(per_run), "decode_runs_ms": [1000 * x for x in per_run],
            "output": text, "transformers": _version("transformers"), "kvpress": _version("kvpress"),
            "load": os.getloadavg()[0]}


# -- the parent ------------------------------------------------------------------------------------

def _spawn(spec: dict, entry: str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent)}
    proc = subprocess.run([sys.executable, __file__, entry, json.dumps(spec)], capture_output=True, text=True, env=env)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    return {**spec, "error": (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]}


def measure(args) -> list[dict]:
    from interp.heads.retrieval import rouge1_recall
    from interp.results.strict_json import dumps

    rows = []
    # interp's rows leave the prompt ids and the pattern here for the kvpress row (a later run may reuse them)
    work = Path(tempfile.gettempdir()) / "interp-kv-cache-bench"
    for tokens in args.tokens:
        for depth in args.depths:
            base = {"model": args.model, "tokens": tokens, "depth": depth, "new_tokens": args.new_tokens,
                    "chunk": args.chunk, "text": args.text, "threads": args.threads}
            save = work / (f"{args.model}-{tokens}-{depth}" + ("-heldout" if args.text == "heldout" else ""))
            save.mkdir(parents=True, exist_ok=True)
            for row in args.rows:
                t = time.time()
                if row == "kvpress":
                    if importlib.util.find_spec("kvpress") is None:
                        result = {**base, "row": row, "error": [
                            "kvpress is not installed in this venv: pip install kvpress==0.5.5 'transformers<5.3'"]}
                        print(result["error"][0], flush=True)
                        rows.append(result)
                        continue
                    if not (save / "prompt.json").exists():
                        print("kvpress needs a row of interp's run first (it reuses its prompt)", flush=True)
                        continue
                    spec = {**base, "row": row, "save": str(save), **json.loads((save / "prompt.json").read_text())}
                    result = _spawn(spec, "--kvpress-child")
                    if "error" not in result:
                        result["recall"] = rouge1_recall(spec["answer"], result["output"])
                else:
                    result = _spawn({**base, "row": row, "save": str(save)}, "--child")
                    if "error" not in result:
                        (save / "prompt.json").write_text(dumps({k: result[k] for k in ("folder", "answer")}))
                print(f"{row} {tokens} {depth}: {time.time() - t:.0f} s "
                      f"{ {k: result.get(k) for k in ('cache_bytes', 'peak_rss', 'prefill_s', 'decode_ms', 'recall', 'error')} }",
                      flush=True)
                rows.append(result)
                save_rows([result], args.chunk, stem=args.stem)  # each row lands as it is measured
    return rows


def shapes() -> list[dict]:
    """Cache bytes of Llama-3.1-8B and 70B shapes (bf16, 8 kv heads of 128, 32 / 80 layers) at
    32k and 128k tokens, from the head-wise cache's own update and attend on the meta device."""
    import numpy as np
    import torch

    from interp.core.headwise import HeadwiseLayer

    out = []
    for name, layers, heads in (("Llama-3.1-8B", 32, 32), ("Llama-3.1-70B", 80, 64)):
        kv, d = 8, 128
        for n in (32768, 131072):
            for share in (1.0, 0.5, 0.25):
                total = 0
                full_heads = int(round(share * layers * kv))
                kept = set(np.round(np.linspace(0, layers * kv - 1, full_heads)).astype(int).tolist())
                for layer in range(layers):  # the kept heads spread evenly over the layers
                    full = [layer * kv + h in kept for h in range(kv)]
                    if all(full):
                        total += 2 * kv * n * d * 2
                        continue
                    cache = HeadwiseLayer(full, heads // kv, SINK, WINDOW)
                    k = torch.empty(1, kv, n, d, device="meta", dtype=torch.bfloat16)
                    q = torch.empty(1, heads, n, d, device="meta", dtype=torch.bfloat16)
                    key, value = cache.update(k, k.clone())
                    cache.attend(lambda m, q, k, v, mask, **kw: (q.transpose(1, 2), None), False, torch.nn.Module(),
                                 q, key, value, None)
                    total += cache.nbytes()
                out.append({"shape": name, "tokens": n, "share": share, "cache_bytes": total})
    return out


def _table(rows: list[dict]) -> list[str]:
    lines = ["| model | tokens | depth | row | cache MB | cache / full | peak RSS MB | prefill s | decode ms/token "
             "| recall | same tokens as compressed25 | load | transformers |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]

    def twin(r: dict, row: str) -> dict | None:
        return next((x for x in rows if x["row"] == row and x["model"] == r["model"] and x["tokens"] == r["tokens"]
                     and x["depth"] == r["depth"] and "error" not in x), None)

    for r in rows:
        if "error" in r:
            lines.append(f"| {r['model']} | {r['tokens']} | {r['depth']} | {r['row']} | failed: "
                         f"{' '.join(r['error'])[:200]} | | | | | | | | |")
            continue
        full, comp = twin(r, "full"), twin(r, "compressed25")
        ratio = f"{r['cache_bytes'] / full['cache_bytes']:.2f}" if full else ""
        same = "" if comp is None or "tokens_out" not in r or r["row"] == "compressed25" else \
            ("yes" if r["tokens_out"] == comp.get("tokens_out") else "no")
        tf = r["transformers"] + (f", kvpress {r['kvpress']}" if "kvpress" in r else "")
        label = r["row"] + (f" (window {r['window']})" if r["row"] == "streamingllm" else "") + \
            (f", {r['threads']} thread{'s' * (r['threads'] > 1)}" if r.get("threads") else "")
        load = f"{r['load']:.0f}" if "load" in r else ""
        lines.append(f"| {r['model']} | {r['prompt_tokens']} | {r['depth']} | {label} | {r['cache_bytes'] / 1e6:.1f} | "
                     f"{ratio} | {r['peak_rss'] / 1e6:.0f} | {r['prefill_s']:.1f} | {r['decode_ms']:.1f} | "
                     f"{r['recall']:.2f} | {same} | {load} | {tf} |")
    return lines


def render(doc: dict, stem: str = STEM) -> str:
    env = doc["environment"]
    lines = ["# Head-wise KV cache on the CPU", "",
             f"Made by `{COMMAND}` ({env}). Every number is read from `{stem}.json`. Peak RSS is each row's "
             "own process (model included); prefill is the prompt's forward (full: one forward; head-wise and "
             f"StreamingLLM and full_chunked: chunks of {doc.get('chunk', 512)} tokens; kvpress: one forward, as "
             "its press runs); "
             "decoding is the median of three runs' mean ms per token; recall is ROUGE-1 of the needle's answer. "
             "Every row of a table runs in the same venv (kvpress 0.5.5 pins transformers < 5.3, so the venv has "
             "the newest transformers it allows, printed per row), each in its own process. "
             f"Head-wise rows keep sink {SINK} + window {WINDOW} for streaming kv heads, the kept heads by the "
             "committed retrieval scan; StreamingLLM gives every kv head sink 4 + the window that matches "
             "headwise25's bytes. The rows run one after another on a machine other jobs may share: `load` is the "
             "1-minute load average when a row ended (blank: not recorded); where it differs between rows, their "
             "seconds do not compare, while bytes, RSS, recall and tokens do not depend on it.", ""]
    for text in ("shipped", "heldout"):
        rows = sorted((r for r in doc["rows"] if r.get("text", "shipped") == text),
                      key=lambda r: (r["model"], r["tokens"], r["depth"], ROWS.index(r["row"])))
        if not rows:
            continue
        if text == "heldout":
            lines += ["", "## Held-out check", "", "A needle and a text the project never used (`--text heldout`: "
                      "Python's reference documentation from `pydoc_data.topics`), the top quarter of kv heads by "
                      "retrieval score. `compressed25` drops the same keys through the mask (no memory saved); "
                      "`same tokens` compares each row's greedy tokens with it.", ""]
        lines += _table(rows)
    if doc.get("shapes"):
        lines += ["", "## Llama-3.1-shaped caches (bf16, batch 1), from the cache's own allocation on the meta device",
                  "", "| shape | tokens | kv heads kept full | cache GB |", "|---|---|---|---|"]
        lines += [f"| {s['shape']} | {s['tokens']} | {s['share']:.0%} | {s['cache_bytes'] / 1e9:.2f} |"
                  for s in doc["shapes"]]
    return "\n".join(lines) + "\n"


def save_rows(new_rows: list[dict], chunk: int, new_shapes: list[dict] | None = None, stem: str = STEM) -> str:
    from interp.results.folders import output_folder
    from interp.results.protocol import write_json

    path = RESULTS / f"{stem}.json"
    doc = json.loads(path.read_text()) if path.exists() else {"rows": []}
    def key(r: dict) -> tuple:
        return r["model"], r["tokens"], r["depth"], r["row"], r.get("text", "shipped")

    fresh = {key(r) for r in new_rows}
    doc["rows"] = [r for r in doc["rows"] if key(r) not in fresh] + \
        [{k: v for k, v in r.items() if k not in ("folder", "save", "answer")} for r in new_rows]
    if new_shapes is not None:
        doc["shapes"] = new_shapes
    doc["chunk"] = chunk
    doc["environment"] = (f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
                          f"torch {_version('torch')}, transformers {_version('transformers')}")
    text = render(doc, stem)
    with output_folder(RESULTS, kind=stem, force=True) as dest:
        dest.write_text(f"{stem}.md", text)
        write_json(dest, f"{stem}.json", doc)
    return text


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        result = child(json.loads(argv[1]))
        print("RESULT " + json.dumps(result), flush=True)
        return 0
    if argv[:1] == ["--kvpress-child"]:
        print("RESULT " + json.dumps(kvpress_child(json.loads(argv[1]))), flush=True)
        return 0
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--tokens", default="8000", help="prompt sizes, comma-separated")
    p.add_argument("--depths", default="0.25,0.75")
    p.add_argument("--rows", default=",".join(ROWS))
    p.add_argument("--new-tokens", type=int, default=16)
    p.add_argument("--text", choices=("shipped", "heldout"), default="shipped",
                   help="heldout: a needle and text the project never used (the held-out check)")
    p.add_argument("--chunk", type=int, default=512, help="prefill chunk of the head-wise rows")
    p.add_argument("--shapes", action="store_true", help="only the Llama-3.1-shaped cache bytes")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads per row (1: a busy machine's other jobs cannot stall a row at every parallel op)")
    p.add_argument("--render", action="store_true")
    p.add_argument("--stem", default=STEM, help="the results file names (benchmarks/results/STEM.json, .md)")
    args = p.parse_args(argv)
    if args.render:
        print(save_rows([], args.chunk, stem=args.stem))
        return 0
    if args.shapes:
        print(save_rows([], args.chunk, shapes()))
        return 0
    args.tokens = [int(x) for x in args.tokens.split(",")]
    args.depths = [float(x) for x in args.depths.split(",")]
    args.rows = [x.strip() for x in args.rows.split(",")]
    bad = [r for r in args.rows if r not in ROWS]
    if bad:
        p.error(f"unknown rows {bad}; rows: {', '.join(ROWS)}")
    measure(args)
    print(save_rows([], args.chunk, stem=args.stem))
    return 0


if __name__ == "__main__":
    sys.exit(main())
