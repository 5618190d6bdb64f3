"""Retrieval heads at work: needle recall while most kv heads keep only sinks and a recent window.

DuoAttention and RazorAttention keep the full KV cache only for retrieval heads and give every
other kv head a sink + recent-window cache. This study measures that on the bundled models:
needle recall (the shipped needles, two depths, 1,000 to 4,000 tokens) while the share of kv
heads kept full falls from 100% to 10%, the kept heads chosen

- by the retrieval score (Wu et al.; the committed head scans, a kv head taking its group's max),
- by the streaming score (lowest first: heads that read far back in long natural text),
- at random (3 seeds),

and, at the same cache size, a sink + window cache for every kv head (StreamingLLM). Every
compressed run goes through ``interp.heads.compressed`` (an attention-mask edit, exact in effect).
Sliding-window layers (Gemma 3's local layers) keep their own window in every condition.

    python case_studies/kv_compression.py [--models smollm2-135m,gemma3-270m]
    python case_studies/kv_compression.py --render     # summary and figure from the saved table
    python case_studies/kv_compression.py --smoke --out DIR
    python case_studies/kv_compression.py --heldout    # out of sample, with the real head-wise cache

Out of sample (``--heldout``): the heads above are chosen from scans of the shipped needles in the
shipped text, and the recall above is measured on the same needles: in sample. ``--heldout``
splits the data. The selection set (the shipped needles and text) chooses the heads, by six rules:
``retrieval`` and ``streaming`` (the committed scans), ``combined`` (the mean of a head's rank by
retrieval score and by streaming score, lowest streaming first), ``masking`` (each kv head's
masking effect on the answers' log-probability), ``gates`` (DuoAttention's gates trained on
synthetic passkeys in the shipped text; both from ``interp.heads.kv_selection``) and ``random``.
Each rule, at 50% and 25% of kv heads kept full, runs through the real cache
(``interp.heads.headwise_cache``, prefill in chunks) on the selection set (in sample) and on six
needles in a text no choice saw (``HELDOUT_NEEDLES`` in Python's reference documentation,
``pydoc_data.topics``): the validation half chooses the rule, the test half reports it, next to
the cache's real bytes. Writes ``heldout.parquet`` and ``kv_selection.parquet`` (the kv heads'
masking effects and gates).

Writes ``results/kv_compression/{recall.parquet, head_scores.parquet, summary.md, recall_vs_cache.html}`` through
one output folder (``interp.results.folders``). Finished conditions are kept in its checkpoint
(``results/kv_compression/.interp-checkpoint/MODEL``, stamped with the plan), so an interrupted run
resumes; it goes once the files are written.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

sys.path.insert(0, str(Path(__file__).parent))
from _study import Stopwatch, fmt, write_figures, write_tables  # noqa: E402

from interp.errors import BadReportError  # noqa: E402
from interp.heads.checkpoint import Checkpoint  # noqa: E402
from interp.results.folders import OutputFolder, output_folder  # noqa: E402
from interp.results.protocol import write_json  # noqa: E402
from interp.results.strict_json import dumps  # noqa: E402

OUT = Path(__file__).parent / "results" / "kv_compression"
SCANS = Path(__file__).parent / "results" / "head_scans"
MODELS = ("smollm2-135m", "gemma3-270m")
SHARES = (1.0, 0.5, 0.25, 0.1)
LENGTHS, DEPTHS, SEEDS = (1000, 2000, 4000), (0.25, 0.75), (0, 1, 2)
SINK, WINDOW = 4, 256
WITHIN = 0.10  # "recall within 10 points of the full cache"
SMOKE = {"lengths": (600,), "depths": (0.5,), "shares": (1.0, 0.5), "seeds": (0,), "needles": 1}
COMMAND = "python case_studies/kv_compression.py"
KIND = "kv_compression"  # the report kind of the files this study writes (interp.results.folders)
# Out of sample (``--heldout``): the heads are chosen on the selection set (the shipped needles in
# the shipped text: the committed scans, the masking effect, and DuoAttention's gates on synthetic
# passkeys in the same text) and evaluated on needles and a text no choice saw (Python's reference
# documentation). The held-out needles split in two: the validation half chooses the rule, the
# test half reports it.
HELDOUT_NEEDLES = [
    {"needle": "The harbour master keeps the spare key to the boathouse inside a hollow copy of Moby Dick.",
     "question": "Where does the harbour master keep the spare key to the boathouse?",
     "answer": "inside a hollow copy of Moby Dick"},
    {"needle": "The committee chose a violet umbrella with silver stars as the mascot of the winter fair.",
     "question": "What did the committee choose as the mascot of the winter fair?",
     "answer": "a violet umbrella with silver stars"},
    {"needle": "The night train to Vienna always leaves from platform nineteen.",
     "question": "Which platform does the night train to Vienna leave from?",
     "answer": "platform nineteen"},
    {"needle": "Doctor Okafor waters her orchids with cold chamomile tea.",
     "question": "What does Doctor Okafor water her orchids with?",
     "answer": "cold chamomile tea"},
    {"needle": "The lost ring was finally found under the third step of the cellar stairs.",
     "question": "Where was the lost ring finally found?",
     "answer": "under the third step of the cellar stairs"},
    {"needle": "The museum's oldest clock was built by a blind watchmaker from Geneva.",
     "question": "Who built the museum's oldest clock?",
     "answer": "a blind watchmaker from Geneva"},
]
VALIDATION, TEST = (0, 2, 4), (1, 3, 5)  # held-out needles: the rule is chosen on the first, reported on the second
RULES = ("retrieval", "streaming", "combined", "masking", "gates", "random")
HELDOUT = {"lengths": (1400,), "depths": (0.25, 0.5, 0.75), "shares": (0.5, 0.25), "max_new_tokens": 16,
           "rules": RULES, "chunk": 512,
           # the masking effect: each kv head streamed alone on the shipped needles at these settings
           "masking": {"length": 900, "depths": (0.3,)},
           # DuoAttention's gates on synthetic passkeys in the shipped text
           "gates": {"steps": 40, "length": 800, "lr": 0.05, "l1": 0.05, "seed": 0}}


def chosen_heads(scores, model, method: str, share: float, seed: int | None,
                 kv_values: dict[str, np.ndarray] | None = None) -> np.ndarray:
    """The kv heads kept full, bool [layers, kv_heads] (``kv_values``: per-kv-head values of the
    rules measured on the model, ``masking`` and ``gates``)."""
    if kv_values and method in kv_values:
        from interp.heads.kv_selection import keep_top

        return keep_top(kv_values[method], share)
    if method == "retrieval":
        return scores.keep_full("retrieval", share, model=model)
    if method == "combined":  # a head's mean rank by both scores (high retrieval, low streaming first)
        ret = scores.kv_pattern("retrieval", model=model).to_numpy()
        stream = scores.kv_pattern("streaming", model=model, lowest=True).to_numpy()
        free = np.argwhere(~np.isnan(ret))
        r = pd.Series(ret[free[:, 0], free[:, 1]]).rank(ascending=False).to_numpy()
        t = pd.Series(stream[free[:, 0], free[:, 1]]).rank(ascending=True).to_numpy()
        order = np.lexsort((np.arange(len(free)), r + t))[: int(round(share * len(free)))]
        keep = np.zeros(ret.shape, dtype=bool)
        keep[free[order, 0], free[order, 1]] = True
        return keep
    if method == "streaming":
        return scores.keep_full("streaming", share, model=model, lowest=True)
    free = np.argwhere(~np.isnan(scores.kv_pattern("retrieval", model=model).to_numpy()))
    keep = np.zeros((model.cfg.n_layers, model.cfg.n_kv_heads), dtype=bool)
    if method == "random":
        pick = np.random.default_rng(seed).permutation(len(free))[: int(round(share * len(free)))]
        keep[free[pick, 0], free[pick, 1]] = True
    return keep  # streamingllm: every unbounded kv head streams


def run_group(model, group, keep, window: int, max_new_tokens: int) -> list[float]:
    """Recall of each test of one batch of same-length tests under the cache (``keep`` None: the
    model's own cache)."""
    from interp.heads.compression import compressed
    from interp.heads.retrieval import decode_batch, prefill, rouge1_recall

    if keep is None:
        rows = decode_batch(model, prefill(model, [t.prompt_ids for t in group]), max_new_tokens)
    else:
        with compressed(model, keep, sink=SINK, window=window):
            rows = decode_batch(model, prefill(model, [t.prompt_ids for t in group]), max_new_tokens)
    return [rouge1_recall(t.answer, model.tokenizer.decode(r)) for t, r in zip(group, rows, strict=True)]


def study_model(name: str, out: OutputFolder, plan: dict, clock: Stopwatch) -> tuple[pd.DataFrame, pd.DataFrame]:
    import interp
    from interp.heads.compression import Compression, sliding_windows
    from interp.heads.head_scan import scan
    from interp.heads.retrieval import needle_tests, test_groups, test_key
    from interp.heads.settings import RetrievalSettings
    from interp.heads.table import HeadScores

    model = interp.load(name)
    report = HeadScores.load(SCANS / name)
    with clock.part(f"{name}: streaming score"):
        streaming = scan(model, ["streaming"], streaming={"sink": SINK, "window": WINDOW}, causal_checks=False,
                         progress=False)
    scores = HeadScores(pd.concat([report.df, streaming.df]), model=name, n_layers=report.n_layers,
                        n_heads=report.n_heads)
    scores.kv_pattern("retrieval", model=model)  # the report has every head's retrieval score, or a clear error
    cfg = RetrievalSettings(lengths=plan["lengths"], depths=plan["depths"]).as_dict()
    cfg["needles"] = cfg["needles"][: plan["needles"]]
    tests = needle_tests(model, cfg)
    groups = test_groups(tests)
    n_free = int((~np.isnan(scores.kv_pattern("retrieval", model=model).to_numpy())).sum())
    bounded = sliding_windows(model)

    def kept_full(method: str, share: float, seed: int | None) -> np.ndarray:
        if method == "full":
            return np.ones((model.cfg.n_layers, model.cfg.n_kv_heads), dtype=bool)
        return chosen_heads(scores, model, method, share, seed)

    def window_for(method: str, share: float, length: int) -> int:
        """StreamingLLM's window gives every head the cache the head-wise methods keep at this
        share, for prompts of ``length``; the others stream with ``WINDOW``."""
        if method != "streamingllm":
            return WINDOW
        full = int(round(share * n_free))
        return max(1, int(round((full * length + (n_free - full) * (SINK + WINDOW)) / n_free)) - SINK)

    conditions = [("full", 1.0, None)]
    for share in (s for s in plan["shares"] if s < 1.0):
        conditions += [("retrieval", share, None), ("streaming", share, None),
                       *(("random", share, seed) for seed in plan["seeds"]), ("streamingllm", share, None)]
    # a test's cache is sized by the prompt length of its batch's first test
    prompt_length = {(t.needle, t.length, t.depth): g[0].prompt_ids.shape[1] for g in groups for t in g}
    # finished conditions, kept until the files are written (an interrupted run resumes from them)
    partial = Checkpoint(out.checkpoint / name, json.loads(dumps({"study": KIND, "model": name, "plan": plan})))
    by_cache: dict[tuple, list[float]] = {}  # the same tests under the same cache run once
    rows = []
    for method, share, seed in tqdm(conditions, desc=f"{name} conditions"):
        key = f"{method}-{share}-{seed}"
        keep = kept_full(method, share, seed)
        results = partial.get_json(key)  # finished by an interrupted run
        if results is None:
            results = []
            for group in groups:
                window = window_for(method, share, group[0].prompt_ids.shape[1])
                cache_key = (keep.tobytes(), window, tuple(map(test_key, group)))
                if cache_key not in by_cache:
                    with clock.part(f"{name}: decoding"):
                        by_cache[cache_key] = run_group(model, group, None if method == "full" else keep, window,
                                                        cfg["max_new_tokens"])
                results += [[t.needle, t.length, t.depth, r] for t, r in zip(group, by_cache[cache_key], strict=True)]
            partial.put_json(key, results)
        for needle, length, depth, recall in results:
            n = prompt_length[(needle, length, depth)]
            cache = Compression(keep, SINK, window_for(method, share, n), bounded)
            rows.append({"model": name, "method": method, "share": share, "seed": seed, "needle": needle,
                         "length": length, "depth": depth, "recall": recall, "kept_fraction": cache.kept_fraction(n),
                         "window": cache.window, "full_kv_heads": n_free - cache.streaming_heads,
                         "free_kv_heads": n_free})
    heads = scores.wide()[["retrieval", "streaming"]].reset_index().assign(model=name)
    return pd.DataFrame(rows), heads


def selection_values(model, name: str, plan: dict, partial, clock: Stopwatch) -> dict[str, np.ndarray]:
    """The masking effect and DuoAttention's gates of every kv head, measured on the selection set
    (kept in the checkpoint: an interrupted run does not measure them again)."""
    from interp.heads.kv_selection import masking_effect, train_gates
    from interp.heads.retrieval import build_test, haystack_ids
    from interp.heads.settings import default_needles

    values = {}
    if (saved := partial.get_json("masking")) is None:
        hay = haystack_ids(model)
        tests = [build_test(model, needle, plan["masking"]["length"], depth, index=i, hay=hay)
                 for i, needle in enumerate(default_needles()) for depth in plan["masking"]["depths"]]
        with clock.part(f"{name}: masking effect"):
            saved = masking_effect(model, tests, sink=SINK, window=WINDOW).tolist()
        partial.put_json("masking", saved)
    values["masking"] = np.array(saved, dtype=float)
    if (saved := partial.get_json("gates")) is None:
        with clock.part(f"{name}: gates"):
            saved = train_gates(model, sink=SINK, window=WINDOW, **plan["gates"]).tolist()
        partial.put_json("gates", saved)
    values["gates"] = np.array(saved, dtype=float)
    return values


def run_test(model, test, keep: np.ndarray, plan: dict) -> dict:
    """One needle test through the real head-wise cache (prefill in chunks, greedy decoding)."""
    import torch

    from interp.core.kv_cache import run_cached
    from interp.heads.headwise import full_cache_bytes, headwise_cache
    from interp.heads.retrieval import rouge1_recall

    cache = headwise_cache(model, keep, SINK, WINDOW)
    ids = test.prompt_ids
    with torch.no_grad():
        for s in range(0, ids.shape[1], plan["chunk"]):
            out, cache = run_cached(model.hf, cache, input_ids=ids[:, s:s + plan["chunk"]], logits_to_keep=1)
        new: list[int] = []
        for _ in range(plan["max_new_tokens"]):
            nxt = int(out.logits[0, -1].argmax())
            if nxt == model.tokenizer.eos_token_id:
                break
            new.append(nxt)
            out, cache = run_cached(model.hf, cache, input_ids=torch.tensor([[nxt]]))
    return {"recall": rouge1_recall(test.answer, model.tokenizer.decode(new)), "cache_bytes": cache.nbytes(),
            "full_cache_bytes": full_cache_bytes(model, cache.get_seq_length())}


def heldout_model(name: str, plan: dict, out: OutputFolder, clock: Stopwatch) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Recall and real cache bytes of each selection rule and share on the selection set (in
    sample), the validation and the test needles (out of sample); and the kv heads' values."""
    from pydoc_data.topics import topics

    import interp
    from interp.heads.compression import sliding_windows
    from interp.heads.retrieval import build_test, haystack_ids
    from interp.heads.settings import default_needles
    from interp.heads.table import HeadScores

    model = interp.load(name)
    heads = pd.read_parquet(OUT / "head_scores.parquet")  # the scans' scores: shipped needles and text only
    heads = heads[heads["model"] == name]
    n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
    arrays = {}
    for score in ("retrieval", "streaming"):
        m = np.full((n_layers, n_heads), np.nan)
        m[heads["layer"].to_numpy(), heads["head"].to_numpy()] = heads[score].to_numpy()
        arrays[score] = m
    bounded = sliding_windows(model)
    scores = HeadScores.from_arrays(arrays, model=name, n_layers=n_layers, n_heads=n_heads,
                                    kv_heads=model.cfg.n_kv_heads, sliding_windows=bounded)
    partial = Checkpoint(out.checkpoint / f"heldout-{name}",
                         json.loads(dumps({"study": KIND, "part": "heldout", "model": name, "plan": plan})))
    values = selection_values(model, name, plan, partial, clock)
    held_hay = model.tokenizer("\n\n".join(topics[k] for k in sorted(topics)), add_special_tokens=False)["input_ids"]
    own_hay = haystack_ids(model)
    tests = [("selection", build_test(model, needle, length, depth, index=i, hay=own_hay))
             for i, needle in enumerate(default_needles()) for length in plan["lengths"] for depth in plan["depths"]]
    tests += [("validation" if i in VALIDATION else "test", build_test(model, needle, length, depth, index=i, hay=held_hay))
              for i, needle in enumerate(HELDOUT_NEEDLES) for length in plan["lengths"] for depth in plan["depths"]]
    conditions = [("full", 1.0)] + [(rule, share) for share in plan["shares"] for rule in plan["rules"]]
    free = [la for la in range(n_layers) if la not in bounded]
    rows = []
    for rule, share in tqdm(conditions, desc=f"{name} held out"):
        keep = np.ones((n_layers, model.cfg.n_kv_heads), dtype=bool) if rule == "full" else \
            chosen_heads(scores, model, rule, share, 0, values)
        results = partial.get_json(f"{rule}-{share}")
        if results is None:
            with clock.part(f"{name}: held out"):
                results = [run_test(model, t, keep, plan) for _, t in tests]
            partial.put_json(f"{rule}-{share}", results)
        rows += [{"model": name, "rule": rule, "share": share, "split": split, "needle": t.needle, "length": t.length,
                  "depth": t.depth, **r, "full_kv_heads": int(keep[free].sum())}
                 for (split, t), r in zip(tests, results, strict=True)]
    kv = pd.DataFrame([{"model": name, "layer": la, "kv_head": h, "masking": values["masking"][la, h],
                        "gates": values["gates"][la, h]} for la in free for h in range(model.cfg.n_kv_heads)])
    return pd.DataFrame(rows), kv


def heldout_lines(heldout: pd.DataFrame, kv: pd.DataFrame | None = None) -> list[str]:
    """The out-of-sample section of the summary: each rule's recall on the selection set (in
    sample) and on the held-out validation and test needles, its real cache, and the rule the
    validation needles choose, reported on the test needles."""
    if "split" not in heldout:
        raise BadReportError("heldout.parquet has no split column: it was written by an older --heldout; run "
                             f"`{COMMAND} --heldout` again")
    per = {s: heldout[heldout["split"] == s] for s in ("selection", "validation", "test")}
    n = {s: int(p.groupby(["rule", "share"]).size().max()) if len(p) else 0 for s, p in per.items()}
    lines = ["## Out of sample: a selection set, held-out needles and text, the real head-wise cache", "",
             f"Made by `{COMMAND} --heldout`, read from `heldout.parquet` ({len(heldout)} rows). Every test runs "
             "through `interp.heads.headwise_cache` (sink 4, window 256, prefill in chunks of 512), "
             f"{', '.join(map(str, sorted(heldout['length'].unique())))} tokens, depths "
             f"{', '.join(map(str, sorted(heldout['depth'].unique())))}, greedy, 16 new tokens; recall is ROUGE-1.",
             "",
             "- **Selection set** (chooses the heads; recall here is in sample): the three shipped needles in the "
             "shipped text. The retrieval and streaming scores are the committed scans of it; `masking` is each kv "
             "head's masking effect (the answers' log-probability lost when that kv head alone streams, shipped "
             "needles at 900 tokens, depth 0.3); `gates` are DuoAttention's gates trained on synthetic passkeys in the shipped "
             "text (`interp.heads.kv_selection`); `combined` ranks by retrieval and streaming together; `random` "
             "is one seed.",
             f"- **Validation** ({n['validation']} tests per rule and share) and **test** ({n['test']}) needles: "
             "needles no choice saw, in a text none saw (Python's reference documentation, `pydoc_data.topics`). "
             "The validation needles choose the rule; the test needles report it.", "",
             "| model | rule | share | kv heads full | selection recall (in sample) | validation recall | test recall "
             "| cache MB | cache / full |", "|---|---|---|---|---|---|---|---|---|"]
    agg = heldout.groupby(["model", "rule", "share", "split"], sort=False)["recall"].mean().unstack("split")
    mem = heldout.groupby(["model", "rule", "share"], sort=False).agg(
        cache=("cache_bytes", "mean"), full=("full_cache_bytes", "mean"), heads=("full_kv_heads", "first"))
    for (model, rule, share), r in agg.iterrows():
        m = mem.loc[(model, rule, share)]
        lines.append(f"| {model} | {rule} | {share:.0%} | {int(m['heads'])} | {fmt(r.get('selection'))} | "
                     f"{fmt(r.get('validation'))} | {fmt(r.get('test'))} | {m['cache'] / 1e6:.1f} | "
                     f"{m['cache'] / m['full']:.2f} |")
    lines.append("")
    for model, part in agg.reset_index().groupby("model", sort=False):
        full = part[part["rule"] == "full"].iloc[0]
        shares = part.loc[part["rule"] != "full", "share"].nunique()
        rules = part[part["rule"] != "full"].groupby("rule", sort=False)[["validation", "test", "selection"]].mean()
        order = rules.sort_values("validation", ascending=False, kind="stable")
        best = order["validation"].iloc[0]
        top = [k for k, v in order["validation"].items() if v == best]
        chosen = top[0]
        won = f"**{chosen}**" if len(top) == 1 else f"**{chosen}** (tied on validation with {', '.join(top[1:])}; first in the rule order)"
        lines.append(
            f"- {model}: the validation needles choose {won} (validation recall {fmt(best)}, mean over the shares); "
            f"on the test needles it recalls {fmt(float(rules.loc[chosen, 'test']))}, against "
            + ", ".join(f"{k} {fmt(float(v))}" for k, v in rules["test"].items() if k != chosen)
            + f"; the full cache {fmt(float(full['test']))} (validation {fmt(float(full['validation']))}, selection "
            f"{fmt(float(full['selection']))}). In sample the rules rank "
            + ", ".join(f"{k} {fmt(float(v))}" for k, v in rules["selection"].sort_values(ascending=False).items())
            + f". With {n['validation']} validation tests per rule and share, one test moves a rule's mean over the "
            f"shares by up to {1 / (n['validation'] * shares):.3f}; the runner-up, {order.index[1]}, is "
            f"{fmt(float(best - order['validation'].iloc[1]))} behind"
            + (": the validation needles do not separate them." if best - order["validation"].iloc[1] < 1 / (
                n["validation"] * shares) else "."))
    if kv is not None and len(kv):
        lines.append("")
        for model, part in kv.groupby("model", sort=False):
            rho = part["masking"].corr(part["gates"], method="spearman")
            lines.append(f"- {model}: Spearman {rho:.2f} between the kv heads' masking effect and their trained gates "
                         f"({len(part)} kv heads; `kv_selection.parquet`).")
    lines.append("")
    return lines


def summarize(table: pd.DataFrame) -> pd.DataFrame:
    """Mean recall and cache kept per model, method and share (random: over its seeds)."""
    return (table.groupby(["model", "method", "share"], sort=False)
            .agg(recall=("recall", "mean"), kept_fraction=("kept_fraction", "mean"), tests=("recall", "size"),
                 full_kv_heads=("full_kv_heads", "first"), free_kv_heads=("free_kv_heads", "first"))
            .reset_index())


def figure(summary: pd.DataFrame):
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    models = list(dict.fromkeys(summary["model"]))
    fig = make_subplots(rows=1, cols=len(models), subplot_titles=models, shared_yaxes=True)
    colors = {"retrieval": "#d62728", "streaming": "#1f77b4", "random": "#7f7f7f", "streamingllm": "#2ca02c"}
    for col, name in enumerate(models, 1):
        part = summary[summary["model"] == name]
        full = part[part["method"] == "full"]
        for method, color in colors.items():
            line = pd.concat([full, part[part["method"] == method]]).sort_values("kept_fraction")
            fig.add_trace(go.Scatter(x=line["kept_fraction"], y=line["recall"], mode="lines+markers", name=method,
                                     line={"color": color}, legendgroup=method, showlegend=col == 1,
                                     hovertemplate=f"{method}<br>cache kept %{{x:.2f}}<br>recall %{{y:.2f}}"
                                                   "<extra></extra>"), row=1, col=col)
        fig.update_xaxes(title_text="share of the full KV cache kept", row=1, col=col)
    fig.update_yaxes(title_text="needle recall (ROUGE-1)", range=[0, 1.05], row=1, col=1)
    fig.update_layout(title="Needle recall against the KV cache kept", width=520 * len(models), height=430)
    return fig


def smallest_cache(part: pd.DataFrame, method: str) -> tuple[float | None, float | None]:
    """The smallest mean cache (and its share of full kv heads) at which ``method`` keeps recall
    within ``WITHIN`` of the full cache; None when no compressed setting does."""
    full = float(part.loc[part["method"] == "full", "recall"].iloc[0])
    ok = part[(part["method"] == method) & (part["recall"] >= full - WITHIN)]
    if ok.empty:
        return None, None
    best = ok.sort_values("kept_fraction").iloc[0]
    return float(best["kept_fraction"]), float(best["share"])


def write_summary(table: pd.DataFrame, out: OutputFolder, seconds: dict[str, float] | None = None,
                  heads: pd.DataFrame | None = None, heldout: pd.DataFrame | None = None,
                  kv: pd.DataFrame | None = None) -> str:
    """``summary.md``, ``summary.parquet`` and the figure from the recall table (``heads``: the
    head scores, else read from the folder's ``head_scores.parquet``)."""
    summary = summarize(table)
    if heads is None:
        heads = pd.read_parquet(out.path / "head_scores.parquet")
    lines = ["# Retrieval heads at work: KV-cache compression", "",
             f"Made by `{COMMAND}`; every number below is read from `recall.parquet` "
             f"({len(table)} rows). Needles: the three shipped needle/question pairs at "
             f"{', '.join(map(str, sorted(table['length'].unique())))} tokens, depths "
             f"{', '.join(map(str, sorted(table['depth'].unique())))}; greedy decoding as in Wu et al.; recall is "
             "ROUGE-1 recall of the answer. Streaming kv heads keep their first 4 and last 256 keys (DuoAttention's "
             "streaming cache); sliding-window layers keep their own window everywhere. The cache kept is the "
             "share of a full cache's keys over all layers and kv heads, averaged over the test lengths.", ""]
    checks = []
    for name, part in summary.groupby("model", sort=False):
        full = float(part.loc[part["method"] == "full", "recall"].iloc[0])
        base = part[part["method"] == "full"].iloc[0]
        lines += [f"## {name}", "", f"The model's own cache (every kv head full; sliding-window layers keep their "
                  f"window): recall {fmt(full)}, cache kept {fmt(base['kept_fraction'])}. {base['free_kv_heads']} kv "
                  "heads are outside sliding-window layers; the shares below are of those.", "",
                  "| share asked | kv heads kept full | method | cache kept | recall | tests |",
                  "|---|---|---|---|---|---|"]
        for r in part[part["method"] != "full"].itertuples():
            full_heads = "0 (every head streams)" if r.method == "streamingllm" else \
                f"{r.full_kv_heads} of {r.free_kv_heads}"
            lines.append(f"| {r.share:.0%} | {full_heads} | {r.method} | {fmt(r.kept_fraction)} | {fmt(r.recall)} | "
                         f"{r.tests} |")
        lines += ["", f"Smallest cache with recall within {WITHIN * 100:.0f} points of the full cache:", ""]
        for method in ("retrieval", "streaming", "random", "streamingllm"):
            kept, share = smallest_cache(part, method)
            lines.append(f"- {method}: " + ("none of the compressed settings" if kept is None else
                                            f"{fmt(kept)} of the cache (share asked {share:.0%})"))
        for share in sorted(set(part["share"]) - {1.0}, reverse=True):
            ret = float(part[(part["method"] == "retrieval") & (part["share"] == share)]["recall"].iloc[0])
            rnd = float(part[(part["method"] == "random") & (part["share"] == share)]["recall"].iloc[0])
            checks.append((name, share, ret, rnd))
        lines.append("")
    lines += ["## Retrieval-chosen heads against random heads", "",
              "| model | share asked | retrieval | random (mean of seeds) | at least random |", "|---|---|---|---|---|"]
    lines += [f"| {m} | {s:.0%} | {fmt(r)} | {fmt(x)} | {'yes' if r >= x else 'no'} |" for m, s, r, x in checks]
    lines += ["", "## What it shows", ""]
    for name, part in summary.groupby("model", sort=False):
        own = float(part.loc[part["method"] == "full", "kept_fraction"].iloc[0])
        kept, _ = smallest_cache(part, "retrieval")
        compressed = part[part["method"] != "full"]
        shares = sorted(set(compressed["share"]), reverse=True)

        def recall(method: str, share: float, part=part) -> float:
            return float(part[(part["method"] == method) & (part["share"] == share)]["recall"].iloc[0])

        below = [f"{share:.0%}" for share in shares if recall("streaming", share) < recall("random", share)]
        h = heads[heads["model"] == name]
        top = h.nlargest(10, "retrieval")
        rest = h.drop(top.index)
        rho = h["retrieval"].corr(h["streaming"], method="spearman")
        lines.append(
            f"- {name}: " + ("no compressed setting keeps recall within 10 points" if kept is None else
                             f"heads chosen by retrieval score keep recall within 10 points with {fmt(kept)} of the "
                             f"cache, {own / kept:.2f}x smaller than the model's own cache") +
            f"; heads chosen by the streaming score recall less than random heads at {len(below)} of "
            f"{len(shares)} shares ({', '.join(below) or 'none'}). On plain text the ten top retrieval heads put "
            f"{fmt(top['streaming'].mean())} of their attention on the sinks and window, the other heads "
            f"{fmt(rest['streaming'].mean())} (Spearman {rho:.2f} between the two scores per head): where a head "
            "looks in plain text says little about whether it copies a needle, so the streaming score is a poor "
            "guide to which heads need their cache.")
    lines += ["", "## Beside the published claims", "",
              "- DuoAttention (Xiao et al., 2024) reports memory reductions of up to 2.55x for MHA and 1.67x for GQA "
              "models (a full cache for about a quarter to a half of the heads) with minimal accuracy loss, "
              "its retrieval heads found by optimisation on synthetic passkey data.",
              "- RazorAttention (Tang et al., 2024) reports over 70% smaller KV caches without noticeable loss, "
              "keeping the full cache for retrieval (echo and induction) heads only.",
              "- Here the heads are chosen from a needle scan of a few minutes on two CPU cores, on models of "
              "135M and 270M parameters, at 1,000 to 4,000 tokens: far shorter contexts than theirs, where a "
              "256-key window is already a large part of the cache.", ""]
    if heldout is None and (out.path / "heldout.parquet").exists():
        heldout = pd.read_parquet(out.path / "heldout.parquet")
    if kv is None and (out.path / "kv_selection.parquet").exists():
        kv = pd.read_parquet(out.path / "kv_selection.parquet")
    if heldout is not None:
        lines += heldout_lines(heldout, kv)
    if seconds:
        lines += ["Run time: " + ", ".join(f"{k} {v:.0f} s" for k, v in seconds.items()) + ".", ""]
    text = "\n".join(lines)
    out.write_text("summary.md", text)
    write_tables(out, {"summary.parquet": summary})
    write_figures({"recall_vs_cache": figure(summary)}, out)
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--out", type=Path, default=None,
                        help="the results folder (default: results/kv_compression; with --smoke a new temporary one)")
    parser.add_argument("--smoke", action="store_true", help="one needle, one short length, two shares (CI)")
    parser.add_argument("--render", action="store_true", help="summary and figure from the saved recall.parquet")
    parser.add_argument("--heldout", action="store_true",
                        help="out of sample: each selection rule on held-out needles and text, with the real cache")
    args = parser.parse_args(argv)
    if args.out is None:
        args.out = Path(tempfile.mkdtemp(prefix="kv_compression-")) if args.smoke else OUT
    with output_folder(args.out, kind=KIND) as out:  # checked and locked before any model loads
        if args.heldout:
            return run_heldout(args, out)
        return render(out) if args.render else run(args, out)


def run_heldout(args, out: OutputFolder) -> int:
    """The out-of-sample table, beside the saved in-sample one; the summary again."""
    models = ["smollm2-135m"] if args.smoke else [m.strip() for m in args.models.split(",") if m.strip()]
    plan = HELDOUT
    if args.smoke:  # one depth, one share, two rules, a short masking and gate run
        plan = dict(HELDOUT, depths=(0.5,), shares=(0.25,), rules=("retrieval", "gates"), max_new_tokens=4,
                    masking={"length": 400, "depths": (0.5,)}, gates=dict(HELDOUT["gates"], steps=1, length=400))
    clock = Stopwatch()
    parts = [heldout_model(name, plan, out, clock) for name in models]
    heldout = pd.concat([p[0] for p in parts], ignore_index=True)
    kv = pd.concat([p[1] for p in parts], ignore_index=True)
    out.keep("recall.parquet", "head_scores.parquet", "run_time.json")
    write_tables(out, {"heldout.parquet": heldout, "kv_selection.parquet": kv})
    times = out.path / "run_time.json"
    seconds = json.loads(times.read_text()) if times.exists() else {}
    seconds.update({k: round(v, 1) for k, v in clock.seconds.items()})
    write_json(out, "run_time.json", seconds)
    print(write_summary(pd.read_parquet(out.path / "recall.parquet"), out, seconds, heldout=heldout, kv=kv))
    return 0


def render(out: OutputFolder) -> int:
    """The summary and figure again from the saved tables."""
    times = out.path / "run_time.json"
    out.keep("recall.parquet", "head_scores.parquet", "run_time.json", "heldout.parquet", "kv_selection.parquet")
    seconds = json.loads(times.read_text()) if times.exists() else None
    print(write_summary(pd.read_parquet(out.path / "recall.parquet"), out, seconds))
    return 0


def run(args, out: OutputFolder) -> int:
    times = out.path / "run_time.json"
    plan = dict(SMOKE) if args.smoke else {"lengths": LENGTHS, "depths": DEPTHS, "shares": SHARES, "seeds": SEEDS,
                                          "needles": 3}
    models = ["smollm2-135m"] if args.smoke else [m.strip() for m in args.models.split(",") if m.strip()]
    clock = Stopwatch()
    parts = [study_model(name, out, plan, clock) for name in models]
    table = pd.concat([p[0] for p in parts], ignore_index=True)
    heads = pd.concat([p[1] for p in parts], ignore_index=True)
    write_tables(out, {"recall.parquet": table, "head_scores.parquet": heads})
    out.keep("heldout.parquet", "kv_selection.parquet")  # the out-of-sample tables of --heldout, if made
    # a resumed run adds its decoding time to the earlier runs'; the rest is redone every run
    seconds = json.loads(times.read_text()) if times.exists() and any((out.checkpoint / m).is_dir()
                                                                     for m in models) else {}
    for part, value in clock.seconds.items():
        seconds[part] = round(seconds.get(part, 0.0) * part.endswith("decoding") + value, 1)
    write_json(out, "run_time.json", seconds)
    print(write_summary(table, out, seconds, heads))
    return 0  # the files land, and the checkpoint goes, as the output folder closes


if __name__ == "__main__":
    sys.exit(main())
