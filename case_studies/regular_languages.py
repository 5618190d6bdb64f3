"""Case study: in-context language learning and n-gram heads (Akyürek et al., ICML'24, arXiv 2401.12973).

A task in the spirit of REGBENCH: every prompt samples a random DFA (2 to 7 states; its alphabet
a random subset of 12 symbols with as many symbols as states; 1 to 3 outgoing edges per state, all
states accepting) and lists strings drawn from it by random walks from the start state (1 to 15
symbols each), separated by ``|``, after a BOS token, cut at 128 tokens. A small transformer (a
Hugging Face Llama, 2 layers x 4 heads, d_model 64) learns to predict the next symbol on 5000
training DFAs (the paper's count) and is tested on 500 new ones: it can only do well by learning
each language from the prompt.

Measured on the test prompts:

- REGBENCH accuracy: at every position whose next token is a symbol (not ``|``), whether the
  model's arg-max is a symbol the DFA allows from its current state.
- n-gram heads: our ``ngram1``..``ngram4`` head scores on the DFA prompts, from the kernel
  statistics of one forward pass (``interp.heads.kernel_stats`` with the rules ``ngram1``..``ngram4``,
  reduced by ``interp.heads.scores.ngram`` as ``interp.heads.scan`` does for natural text).
- The in-context back-off n-gram model (Akyürek et al.'s baseline, refit on every prefix, strings
  split on ``|``, N = 1..4): the L1 distance between its next-token distribution and the model's,
  against the L1 distance of uniform guesses (over the 12 symbols, or over the symbols seen in
  the prompt) and of the DFA's own next-token distribution (uniform over the allowed symbols).
- Ablations: mean-ablating the top n-gram heads (``interp.circuits.ablate_heads``) against every
  set of as many of the other heads, accuracy and L1 distance after each.

Writes ``case_studies/results/regular_languages/``: ``summary.md``, ``summary.json``,
``ngram_heads.parquet`` (layer, head, n, score), ``training.parquet`` and the figures
``training.html``, ``ngram_heads.html`` and ``distances.html`` (sharing ``plotly.min.js``; PNG too
when kaleido is installed).

    python case_studies/regular_languages.py                       # ~13 min on 2 shared CPU cores
    python case_studies/regular_languages.py --smoke --out DIR     # a tiny run of every part
    python case_studies/regular_languages.py --render              # summary and figures from the saved tables
"""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import _study as study
import numpy as np
import pandas as pd
import torch
from _study import fmt

from interp.core.sites import head_label
from interp.results.folders import OutputFolder, output_folder
from interp.results.protocol import write_json

OUT = Path(__file__).parent / "results" / "regular_languages"
KIND = "regular_languages"  # the report kind of the files this study writes (interp.results.folders)
SYMBOLS = "abcdefghijkl"
BOS, SEP = "<s>", "|"
VOCAB = [BOS, SEP, *SYMBOLS]  # ids: BOS 0, | 1, symbols 2..13
SEP_ID, FIRST_SYMBOL = 1, 2


@dataclass(frozen=True)
class Settings:
    min_states: int = 2
    max_states: int = 7
    max_edges: int = 3
    max_string: int = 15
    length: int = 128  # tokens per prompt, BOS included
    train_dfas: int = 5000
    test_dfas: int = 500
    layers: int = 2
    heads: int = 4
    d_model: int = 64
    head_dim: int = 32  # wider than d_model / heads: rotary embeddings leave few dimensions to match tokens in
    d_mlp: int = 256
    batch: int = 32
    lr: float = 2e-3
    warmup: int = 100
    steps: int = 2500
    eval_every: int = 250
    ablate_k: int = 2
    random_sets: int = 40  # control sets of heads at most (all of them when there are fewer)
    seed: int = 0
    orders: tuple[int, ...] = field(default=(1, 2, 3, 4))


# -- the task -------------------------------------------------------------------------------------
@dataclass
class DFA:
    """States 0..n-1, all accepting; ``edges[state] = {symbol id: next state}``."""

    edges: list[dict[int, int]]

    def valid(self, state: int) -> list[int]:
        return sorted(self.edges[state])


def random_dfa(s: Settings, rng: np.random.Generator) -> DFA:
    n = int(rng.integers(s.min_states, s.max_states + 1))
    alphabet = rng.choice(len(SYMBOLS), size=n, replace=False) + FIRST_SYMBOL
    edges = []
    for _ in range(n):
        k = int(rng.integers(1, min(s.max_edges, n) + 1))
        symbols = rng.choice(alphabet, size=k, replace=False)
        edges.append({int(sym): int(rng.integers(n)) for sym in symbols})
    return DFA(edges)


def prompt(dfa: DFA, s: Settings, rng: np.random.Generator) -> tuple[list[int], list[list[int]]]:
    """Token ids (BOS, strings separated by ``|``, cut at ``s.length``) and, per position, the
    symbols the DFA allows next (empty where the string may also end: after the cut or at ``|``)."""
    ids, states = [0], [0]
    while len(ids) < s.length:
        state = 0
        for _ in range(int(rng.integers(1, s.max_string + 1))):
            sym = int(rng.choice(dfa.valid(state)))
            state = dfa.edges[state][sym]
            ids.append(sym)
            states.append(state)
        ids.append(SEP_ID)
        states.append(0)
    ids = ids[: s.length]
    return ids, [dfa.valid(st) for st in states[: s.length]]


def dataset(s: Settings, n: int, seed: int) -> tuple[torch.Tensor, list[list[list[int]]]]:
    rng = np.random.default_rng(seed)
    rows, allowed = [], []
    for _ in range(n):
        ids, valid = prompt(random_dfa(s, rng), s, rng)
        rows.append(ids)
        allowed.append(valid)
    return torch.tensor(rows), allowed


def scored_positions(ids: torch.Tensor) -> torch.Tensor:
    """``[n, length - 1]``: positions whose next token is a symbol (REGBENCH scores these)."""
    return ids[:, 1:] >= FIRST_SYMBOL


def allowed_mask(allowed: list[list[list[int]]], length: int) -> torch.Tensor:
    """``[n, length, vocab]``: True for the symbols the DFA allows after each position."""
    mask = torch.zeros(len(allowed), length, len(VOCAB), dtype=torch.bool)
    for i, rows in enumerate(allowed):
        for t, valid in enumerate(rows):
            mask[i, t, valid] = True
    return mask


# -- the in-context back-off n-gram model -----------------------------------------------------------
PAD = -1  # the start marks strings are padded with


def ngram_predictions(ids: list[int], N: int) -> np.ndarray:
    """``[length, vocab]`` next-token distributions of Akyürek et al.'s in-context back-off n-gram
    model, refit on each prefix. The prompt so far is split on ``|`` into strings (the current,
    unfinished one included), each padded in front with N - 1 start marks, and every n-gram up to N
    of the padded strings is counted. A symbol seen after the last N - 1 symbols gets
    count(context + symbol) / count(context); the mass left over (the context also occurs at the
    end of the current string, with no successor yet) goes to the symbols not seen after it, in
    proportion to the next lower order; order 1 is the symbols' frequency. The vocabulary is the
    symbols seen so far (``|`` is never predicted); rows before any symbol are zero."""
    counts: Counter = Counter()
    unigrams = [0]  # all order-1 counts, start marks included
    out = np.zeros((len(ids), len(VOCAB)))
    string: list[int] = []
    seen: set[int] = set()

    def new_string() -> None:
        string[:] = [PAD] * (N - 1)
        for n in range(1, N):  # the n-grams of start marks alone in the padded empty string
            counts[(PAD,) * n] += N - n
        unigrams[0] += N - 1

    new_string()
    for t, tok in enumerate(ids):
        if tok == SEP_ID:
            new_string()
        elif tok >= FIRST_SYMBOL:
            string.append(tok)
            seen.add(tok)
            unigrams[0] += 1
            for n in range(1, N + 1):  # every n-gram ending at the new symbol
                counts[tuple(string[-n:])] += 1
        if seen:
            vocab = sorted(seen)
            probs = _backoff(tuple(string[len(string) - (N - 1):]), vocab, N, counts, unigrams[0])
            if probs.sum() > 0:
                out[t, vocab] = probs / probs.sum()
    return out


def _backoff(context: tuple, vocab: list[int], n: int, counts: Counter, unigrams: int) -> np.ndarray:
    """P(symbol | the last n - 1 symbols) over ``vocab``, backing off as ``ngram_predictions`` says."""
    if n == 1:
        return np.array([counts[(v,)] for v in vocab], dtype=float) / max(unigrams, 1)
    total = counts[context]
    probs = np.zeros(len(vocab))
    seen = np.zeros(len(vocab), dtype=bool)
    if total:
        for i, v in enumerate(vocab):
            c = counts[(*context, v)]
            if c:
                probs[i], seen[i] = c / total, True
    rest = 1.0 - probs.sum()
    if rest > 1e-12 and not seen.all():
        lower = _backoff(context[1:], vocab, n - 1, counts, unigrams) * ~seen
        if lower.sum() > 0:
            probs += rest * lower / lower.sum()
    return probs


def ngram_table(ids: torch.Tensor, N: int) -> np.ndarray:
    """``[n, length, vocab]``: the back-off n-gram model's predictions on every prompt."""
    return np.stack([ngram_predictions(row, N) for row in ids.tolist()])


# -- the model ------------------------------------------------------------------------------------
def tokenizer():
    """One token per symbol (and ``|``), BOS = 0."""
    return study.char_tokenizer(VOCAB)


def build_model(s: Settings):
    return study.llama(len(VOCAB), s.layers, s.heads, s.d_model, s.head_dim, s.d_mlp, s.length, s.seed)


def accuracy(logits: torch.Tensor, ids: torch.Tensor, allowed: torch.Tensor) -> float:
    """REGBENCH accuracy: the arg-max is an allowed symbol, over positions whose next token is a symbol."""
    pred = logits[:, :-1].argmax(-1)
    ok = torch.gather(allowed[:, :-1], 2, pred[..., None])[..., 0]
    keep = scored_positions(ids)
    return float(ok[keep].float().mean())


@torch.no_grad()
def logits_of(model, ids: torch.Tensor, batch: int = 100) -> torch.Tensor:
    model.eval()
    return torch.cat([model(input_ids=ids[i: i + batch]).logits for i in range(0, len(ids), batch)])


def train(s: Settings, train_ids: torch.Tensor, test_ids: torch.Tensor, test_allowed: torch.Tensor, log=print):
    model = build_model(s)
    opt, sched = study.adamw(model, s.lr, 0.1, s.warmup)
    g = torch.Generator().manual_seed(s.seed)
    order = torch.randperm(len(train_ids), generator=g)
    rows: list[dict] = []
    losses: list[float] = []
    at = 0
    for step in range(s.steps + 1):
        if step % s.eval_every == 0 or step == s.steps:
            logits = logits_of(model, test_ids)
            row = {"step": step, "train_loss": float(np.mean(losses)) if losses else float("nan"),
                   "test_accuracy": accuracy(logits, test_ids, test_allowed)}
            rows.append(row)
            losses = []
            log(f"  step {step}: loss {row['train_loss']:.3f}, test accuracy {row['test_accuracy']:.3f}")
            model.train()
        if step == s.steps:
            break
        if at + s.batch > len(order):  # a new epoch, reshuffled
            order, at = torch.randperm(len(train_ids), generator=g), 0
        batch = train_ids[order[at: at + s.batch]]
        at += s.batch
        losses.append(study.train_step(model, batch, opt, sched))
    return model.eval(), pd.DataFrame(rows)


# -- measures -------------------------------------------------------------------------------------
def ngram_head_scores(model, ids: torch.Tensor, orders: tuple[int, ...], batch: int = 50) -> pd.DataFrame:
    """Our n-gram head scores on the prompts: the kernels' mass on the tokens that followed earlier
    occurrences of the current n-token context, over rows with such an occurrence (as
    ``interp.heads.scan`` computes ``ngram1``..``ngram4`` on natural text)."""
    from interp.heads import scores as S
    from interp.heads.kernel_stats import head_stats

    rules = sorted({f"ngram{n}" for n in orders} | {"bos", "self"})
    totals: dict[int, torch.Tensor] = {}
    uniform = {n: [0.0, 0] for n in orders}  # what a head attending evenly to every visible key would score
    for i in range(0, len(ids), batch):
        part = ids[i: i + batch]
        stats = head_stats(model, part, rules=rules)
        rows = torch.ones(part.shape, dtype=torch.bool)
        for n in orders:
            per_layer = torch.stack([S.ngram(stats[layer], rows, n) for layer in range(model.cfg.n_layers)], dim=1)
            totals[n] = totals.get(n, 0) + per_layer.double()
            targets = stats[0].n_targets[f"ngram{n}"].double()  # [b, rows]
            visible = stats[0].rows.double() + 1
            matched = targets > 0
            uniform[n][0] += float((targets / visible)[matched].sum())
            uniform[n][1] += int(matched.sum())
    out = []
    for n in orders:
        values = S.finish(totals[n]).numpy()  # [layers, heads]
        even = uniform[n][0] / max(uniform[n][1], 1)
        out += [{"layer": la, "head": h, "n": n, "score": float(values[la, h]), "uniform_attention": even}
                for la in range(values.shape[0]) for h in range(values.shape[1])]
    return pd.DataFrame(out)


def l1(p: np.ndarray, q: np.ndarray, keep: np.ndarray) -> float:
    """Mean L1 distance between next-token distributions at the ``keep`` positions (both renormalised)."""
    p = p[keep] / np.clip(p[keep].sum(-1, keepdims=True), 1e-12, None)
    q = q[keep] / np.clip(q[keep].sum(-1, keepdims=True), 1e-12, None)
    return float(np.abs(p - q).sum(-1).mean())


def distances(model_probs: np.ndarray, ngrams: dict[int, np.ndarray], dfa: np.ndarray, ids: torch.Tensor) -> dict:
    """L1 distances at the positions Akyürek et al. compare (next token a symbol, the n-gram model
    defined there), for the model and for the reference guesses."""
    keep = scored_positions(ids).numpy()
    keep = np.concatenate([keep, np.zeros((keep.shape[0], 1), dtype=bool)], axis=1)  # the last position predicts nothing
    keep &= ngrams[max(ngrams)].sum(-1) > 0
    uniform = np.zeros_like(dfa)
    uniform[..., FIRST_SYMBOL:] = 1.0
    in_context = np.stack([np.stack([_seen_row(row, t) for t in range(len(row))]) for row in ids.tolist()])
    out: dict = {"positions": int(keep.sum())}
    for n, pred in ngrams.items():
        out[f"model_vs_ngram{n}"] = l1(model_probs, pred, keep)
        out[f"uniform_vs_ngram{n}"] = l1(uniform, pred, keep)
        out[f"in_context_uniform_vs_ngram{n}"] = l1(in_context, pred, keep)
        out[f"dfa_vs_ngram{n}"] = l1(dfa, pred, keep)
    out["model_vs_dfa"] = l1(model_probs, dfa, keep)
    out["uniform_vs_dfa"] = l1(uniform, dfa, keep)
    return out


def _seen_row(row: list[int], t: int) -> np.ndarray:
    p = np.zeros(len(VOCAB))
    seen = sorted({x for x in row[: t + 1] if x >= FIRST_SYMBOL})
    p[seen] = 1.0
    return p


def table_accuracy(probs: np.ndarray, ids: torch.Tensor, allowed: torch.Tensor) -> float:
    """REGBENCH accuracy of a table of next-token distributions (arg-max; a row of zeros picks BOS,
    which is never allowed, so it counts as wrong)."""
    return accuracy(torch.tensor(probs), ids, allowed)


def head_strength(heads_df: pd.DataFrame) -> pd.DataFrame:
    """Per head and order, how far its n-gram score lies from uniform attention towards 1:
    (score - uniform) / (1 - uniform); 0 for a head attending evenly, 1 for all mass on the targets."""
    df = heads_df.copy()
    df["strength"] = (df["score"] - df["uniform_attention"]) / (1 - df["uniform_attention"]).clip(lower=1e-9)
    return df


def ablations(imodel, ids: torch.Tensor, allowed: torch.Tensor, heads_df: pd.DataFrame, ngrams: dict[int, np.ndarray],
              s: Settings) -> dict:
    """Mean-ablate the top ``ablate_k`` n-gram heads (by their strongest order, ``head_strength``)
    and, as controls, every set of as many of the other heads (or ``random_sets`` random ones where there
    are more); accuracy and the L1 distance to the 3-gram model after each."""
    import itertools

    from interp.circuits import ablate_heads

    strength = head_strength(heads_df).groupby(["layer", "head"])["strength"].max()
    ranked = strength.sort_values(ascending=False, kind="stable")
    top = sorted((int(la), int(h)) for la, h in ranked.index[: s.ablate_k])
    heads = [(int(la), int(h)) for la, h in strength.index]
    others = [sorted(c) for c in itertools.combinations([h for h in heads if h not in top], s.ablate_k)]
    if len(others) > s.random_sets:
        rng = np.random.default_rng(s.seed)
        others = [others[i] for i in sorted(rng.choice(len(others), size=s.random_sets, replace=False))]
    n3 = 3 if 3 in ngrams else max(ngrams)
    keep = scored_positions(ids).numpy()
    keep = np.concatenate([keep, np.zeros((keep.shape[0], 1), dtype=bool)], axis=1) & (ngrams[n3].sum(-1) > 0)
    sets: dict[str, dict] = {}
    for name, chosen in [("none", []), ("top", top), *((f"random{i}", c) for i, c in enumerate(others))]:
        interventions = ablate_heads(imodel, chosen, "mean", inputs=ids) if chosen else None
        logits = torch.cat([imodel.run(ids[i: i + 100], interventions=interventions)
                            for i in range(0, len(ids), 100)]).float()
        sets[name] = {"heads": [head_label(la, h) for la, h in chosen], "layers": sorted({la for la, _ in chosen}),
                      "accuracy": accuracy(logits, ids, allowed), "l1_ngram": l1(logits.softmax(-1).numpy(), ngrams[n3], keep)}
    rnd = [v for name, v in sets.items() if name.startswith("random")]
    acc = np.array([v["accuracy"] for v in rnd]) if rnd else np.array([np.nan])
    top_acc = sets["top"]["accuracy"]
    return {"k": s.ablate_k, "order_l1": n3, "sets": sets,
            "strength": {head_label(la, h): round(float(v), 4) for (la, h), v in strength.items()},
            "random_accuracy_mean": float(np.nanmean(acc)), "random_accuracy_min": float(np.nanmin(acc)),
            "random_accuracy_max": float(np.nanmax(acc)),
            "top_rank": 1 + int(sum(v["accuracy"] < top_acc for v in rnd)),  # 1: no random set hurts more
            "same_layers": [v for v in rnd if v["layers"] == sets["top"]["layers"]]}


# -- figures and summary --------------------------------------------------------------------------
def figures(history: pd.DataFrame, heads_df: pd.DataFrame, res: dict):
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    tr = make_subplots(rows=1, cols=2, subplot_titles=("training loss", "test accuracy (REGBENCH, 500 new DFAs)"))
    tr.add_trace(go.Scatter(x=history["step"], y=history["train_loss"], mode="lines+markers", name="training loss"),
                 row=1, col=1)
    tr.add_trace(go.Scatter(x=history["step"], y=history["test_accuracy"], mode="lines+markers", name="transformer"),
                 row=1, col=2)
    for n, acc in res["ngram_accuracy"].items():
        tr.add_hline(y=acc, line={"dash": "dot", "color": "#999"}, annotation_text=f"{n}-gram back-off",
                     row=1, col=2)  # type: ignore[arg-type]
    tr.update_xaxes(title_text="training step")
    tr.update_layout(title="Training on in-context regular languages", height=420, width=1100)
    orders = sorted(heads_df["n"].unique())
    hm = make_subplots(rows=1, cols=len(orders), subplot_titles=[f"ngram{n}" for n in orders])
    for i, n in enumerate(orders, start=1):
        part = heads_df[heads_df["n"] == n].pivot(index="layer", columns="head", values="score")
        hm.add_trace(go.Heatmap(z=part.values, x=list(part.columns), y=list(part.index), zmin=0, zmax=1,
                                colorscale="Viridis", showscale=i == len(orders),
                                hovertemplate="L%{y}H%{x}: %{z:.3f}<extra></extra>"), row=1, col=i)
        hm.update_yaxes(autorange="reversed", title_text="layer" if i == 1 else None, row=1, col=i)
        hm.update_xaxes(title_text="head", row=1, col=i)
    hm.update_layout(title="n-gram head scores on the test prompts (mass on the tokens after earlier matches of the "
                           "last n tokens)", height=360, width=1100)
    d = res["distances"]
    dist = make_subplots(rows=1, cols=2, subplot_titles=("L1 distance to the in-context back-off n-gram model",
                                                         "Accuracy after mean-ablating each set of heads (red: top "
                                                         "n-gram heads; green: none)"))
    for who, color in (("model", "#1f77b4"), ("dfa", "#2ca02c"), ("in_context_uniform", "#ff7f0e"),
                       ("uniform", "#7f7f7f")):
        dist.add_trace(go.Bar(x=[f"N={n}" for n in res["orders"]], y=[d[f"{who}_vs_ngram{n}"] for n in res["orders"]],
                              name={"model": "transformer", "dfa": "DFA (uniform over allowed)",
                                    "in_context_uniform": "uniform over seen symbols",
                                    "uniform": "uniform over the 12 symbols"}[who], marker_color=color), row=1, col=1)
    sets = sorted(res["ablation"]["sets"].items(), key=lambda kv: kv[1]["accuracy"])
    dist.add_trace(go.Bar(x=[", ".join(v["heads"]) or "none" for _, v in sets], y=[v["accuracy"] for _, v in sets],
                          showlegend=False, marker_color=[{"none": "#2ca02c", "top": "#d62728"}.get(name, "#aaa")
                                                          for name, _ in sets]), row=1, col=2)
    dist.update_yaxes(title_text="mean L1 (0..2)", row=1, col=1)
    dist.update_yaxes(title_text="accuracy", range=[0, 1], row=1, col=2)
    dist.update_layout(barmode="group", title="Predictions against the n-gram baseline, and ablations",
                       height=450, width=1150)
    return {"training": tr, "ngram_heads": hm, "distances": dist}


# How ngram_predictions was checked (once, by hand: the reference code is not part of this repository).
REFERENCE_CHECK = (
    "The back-off n-gram model was checked against Akyürek et al.'s `predict_with_n_gram_back_off` "
    "(`ngram.py` of berlino/seq_icl, commit 9b9223d, defaults: back-off, no add-one) on 100 prompts of this task: "
    "for N = 2, 3 and 4 every next-token distribution agrees to within 4e-16 once both are normalised (theirs "
    "leaves the mass of a context's last, successor-less occurrence unassigned when every seen symbol has followed "
    "it; their L1 distance normalises too). Their code does not run N = 1 (the context slice `[-0:]` is the whole "
    "string); ours is the symbols' frequency there. `tests/test_case_studies.py` checks a prompt worked out by hand.")


def markdown(res: dict, s: Settings, seconds: dict, command: str, written: list[str]) -> str:
    d, ab = res["distances"], res["ablation"]
    lines = ["# In-context regular languages: n-gram heads and the back-off n-gram baseline", "",
             f"Produced by `{command}`: {seconds['total'] / 60:.1f} min on 2 shared CPU cores (data "
             f"{seconds['data']:.0f} s, training {seconds['train'] / 60:.1f} min, n-gram baselines {seconds['ngram']:.0f} s, "
             f"head scores and ablations {seconds['heads']:.0f} s; torch threads: 1).", "",
             f"Task (REGBENCH-style, smaller): random DFAs with {s.min_states}-{s.max_states} states over a random "
             f"alphabet of as many of {len(SYMBOLS)} symbols, 1-{s.max_edges} edges per state, strings of 1-"
             f"{s.max_string} symbols separated by `|` after BOS, {s.length} tokens per prompt; {s.train_dfas} training "
             f"DFAs, {s.test_dfas} test DFAs (REGBENCH: 20 symbols, up to 12 states, up to 4 edges, 10-20 strings of up to "
             f"50 symbols, 5000 / 500 instances). Model: Llama (Hugging Face `LlamaConfig`), {s.layers} layers x "
             f"{s.heads} heads, d_model {s.d_model}, MLP {s.d_mlp}; AdamW lr {s.lr}, weight decay 0.1, batch {s.batch}, "
             f"{s.steps} steps ({s.steps * s.batch / s.train_dfas:.0f} epochs), seed {s.seed} (the paper's baseline "
             "transformer: 8 layers, d 128, 2 heads, 200 epochs).", "",
             "## Accuracy on the test DFAs (REGBENCH: the arg-max is a symbol the DFA allows; positions whose next "
             "token is a symbol)", "",
             "| predictor | accuracy |", "|---|---|",
             f"| transformer | {fmt(res['accuracy'])} |"]
    for n, acc in res["ngram_accuracy"].items():
        lines.append(f"| in-context back-off {n}-gram | {fmt(acc)} |")
    lines += [f"| uniform guess over the 12 symbols (expected) | {fmt(res['chance_accuracy'])} |", "",
              "## n-gram heads", "",
              "Score: attention mass on the tokens that followed earlier occurrences of the current n-token context, "
              "over rows with such an occurrence (our `ngram1`..`ngram4`; `ngram1` is the induction pattern). A head "
              "attending evenly to every visible key would score the 'uniform' column.", "",
              "| n | top heads (score) | uniform attention |", "|---|---|---|"]
    for n, top in res["top_ngram_heads"].items():
        named = ", ".join(f"{head_label(t['layer'], t['head'])} ({t['score']:.2f})" for t in top)
        lines.append(f"| {n} | {named} | {fmt(res['uniform_attention'][n])} |")
    lines += ["", "## Distance to the in-context back-off n-gram model (mean L1 between next-token distributions, "
              f"0..2, over {d['positions']} positions)", "",
              "| N | transformer | DFA (uniform over allowed) | uniform over seen symbols | uniform over 12 symbols |",
              "|---|---|---|---|---|"]
    for n in res["orders"]:
        lines.append(f"| {n} | {fmt(d[f'model_vs_ngram{n}'])} | {fmt(d[f'dfa_vs_ngram{n}'])} | "
                     f"{fmt(d[f'in_context_uniform_vs_ngram{n}'])} | {fmt(d[f'uniform_vs_ngram{n}'])} |")
    lines += ["", f"The transformer's distance to the DFA's own distribution: {fmt(d['model_vs_dfa'])} (uniform over 12 "
              f"symbols: {fmt(d['uniform_vs_dfa'])}).", "", REFERENCE_CHECK, "",
              f"## Ablation (mean-ablating {ab['k']} heads over the test prompts)", "",
              f"The top n-gram heads are the {ab['k']} heads whose best n-gram score lies furthest from uniform "
              f"attention towards 1; the controls are {len(ab['sets']) - 2} sets of {ab['k']} of the other heads.", ""]
    rows = []
    for name, v in sorted(ab["sets"].items(), key=lambda kv: ({"none": 0, "top": 1}.get(kv[0], 2), kv[1]["accuracy"])):
        label = {"none": "none", "top": "top n-gram heads"}.get(name, "other heads")
        rows.append([label, ", ".join(v["heads"]) or "—", fmt(v["accuracy"]), fmt(v["l1_ngram"])])
    lines += study.table(["heads ablated", "which", "accuracy", f"L1 to the {ab['order_l1']}-gram model"], rows)
    lines += [""]
    lines += ["## Against the paper", "", *reading(res), "",
              study.files_line(["summary.md", "summary.json", "training.parquet", "ngram_heads.parquet", *written],
                         "`training.html`: loss and test accuracy against step with the n-gram baselines; "
                         "`ngram_heads.html`: the n-gram scores per head; `distances.html`: L1 distances and ablations.")]
    return "\n".join(lines) + "\n"


# A head is called an n-gram head when its score lies at least this far from uniform attention
# towards 1 (the strength of ``head_strength``); Olsson et al.'s 0.4 for induction heads, on
# sequences where uniform attention scores near 0.
NGRAM_HEAD = 0.4


def reading(res: dict) -> list[str]:
    d, ab = res["distances"], res["ablation"]
    out = []
    best = {n: top[0] for n, top in res["top_ngram_heads"].items()}
    even = res["uniform_attention"]
    strength = {n: (t["score"] - even[n]) / max(1 - even[n], 1e-9) for n, t in best.items()}
    present = [n for n in best if strength[n] >= NGRAM_HEAD]
    out.append("- Paper: trained transformers have n-gram heads, which attend to the tokens that followed earlier "
               "occurrences of the current (n-1)-token context. Here: the best head per order scores "
               + ", ".join(f"ngram{n} {t['score']:.2f} ({head_label(t['layer'], t['head'])}; uniform attention "
                           f"{even[n]:.2f}; strength {strength[n]:.2f})" for n, t in best.items())
               + ", strength being the share of the way from uniform attention to all mass on the targets. "
               + (f"Heads of order {', '.join(map(str, present))} reach {NGRAM_HEAD}: n-gram heads are present. Agrees."
                  if present else f"None reaches {NGRAM_HEAD}: the heads lean towards the n-gram targets but are not "
                  "n-gram heads. Disagrees at this scale."))
    n3 = 3 if 3 in res["orders"] else max(res["orders"])
    m, u, c, dfa = (d[f"{w}_vs_ngram{n3}"] for w in ("model", "uniform", "in_context_uniform", "dfa"))
    closest = min(res["orders"], key=lambda n: d[f"model_vs_ngram{n}"])
    verdict = ("Agrees: closer than both guesses." if m < c and m < u else
               "Partly agrees: far closer than chance, but no closer than guessing evenly among the symbols seen so "
               "far." if m < u else "Disagrees: not closer than chance.")
    out.append(f"- Paper: the transformer's next-token distributions are close to the in-context back-off 3-gram "
               f"model's (the closest of the baselines they compare). Here: L1 to the {n3}-gram model {m:.3f} against "
               f"{u:.3f} for chance (uniform over the {len(SYMBOLS)} symbols) and {c:.3f} for uniform over the symbols "
               f"seen so far; the DFA's own distribution is at {dfa:.3f}. Of N = {', '.join(map(str, res['orders']))}, "
               f"the model is closest to N = {closest} ({d[f'model_vs_ngram{closest}']:.3f}). {verdict}")
    acc, grams = res["accuracy"], res["ngram_accuracy"]
    best_gram = max(grams, key=lambda n: grams[n])
    out.append(f"- Paper: transformers learn these languages in context well; their accuracy is at or above the n-gram "
               f"models'. Here: {acc:.3f} against " + ", ".join(f"{n}-gram {a:.3f}" for n, a in grams.items())
               + f" (uniform guessing: {res['chance_accuracy']:.3f}). "
               + ("Agrees." if acc >= grams[best_gram] else
                  f"Disagrees: below the {best_gram}-gram model, above chance."))
    top, base = ab["sets"]["top"], ab["sets"]["none"]["accuracy"]
    others = len(ab["sets"]) - 2
    same = ab["same_layers"]
    line = (f"- Ablation (the paper hard-wires n-gram heads to help; here we remove the learned ones): mean-ablating "
            f"the top {ab['k']} n-gram heads ({', '.join(top['heads'])}) takes accuracy from {base:.3f} to "
            f"{top['accuracy']:.3f}; the {others} sets of {ab['k']} other heads: mean {fmt(ab['random_accuracy_mean'])} "
            f"(from {fmt(ab['random_accuracy_min'])} to {fmt(ab['random_accuracy_max'])}); the top heads rank "
            f"{ab['top_rank']} of {others + 1} by harm")
    if same:
        line += (f"; the {len(same)} set(s) in the same layers as the top heads: "
                 + ", ".join(f"{', '.join(v['heads'])} {v['accuracy']:.3f}" for v in same))
    worse = ab["top_rank"] <= max(1, (others + 1) // 10)
    line += (". " + ("Ablating the n-gram heads hurts more than almost any other set. Agrees." if worse else
                     "Other heads matter more: ablating the n-gram heads hurts less than the typical set of other heads"
                     + (", though more than other heads of their layer" if same and all(top["accuracy"] < v["accuracy"]
                                                                                      for v in same) else "")
                     + ". Disagrees."))
    out.append(line)
    return out


def run(s: Settings, watch: study.Stopwatch, log=print) -> tuple[dict, pd.DataFrame, pd.DataFrame]:
    import interp

    with watch.part("data"):
        train_ids, _ = dataset(s, s.train_dfas, s.seed)
        test_ids, test_allowed_lists = dataset(s, s.test_dfas, 10_000 + s.seed)
        test_allowed = allowed_mask(test_allowed_lists, s.length)
    with watch.part("train"):
        hf, history = train(s, train_ids, test_ids, test_allowed, log=log)
    with watch.part("ngram"):
        ngrams = {n: ngram_table(test_ids, n) for n in s.orders}
    with watch.part("heads"):
        model = interp.load(model=hf, tokenizer=tokenizer(), name="regbench-llama")
        logits = torch.cat([model.run(test_ids[i: i + 100]) for i in range(0, len(test_ids), 100)]).float()
        probs = logits.softmax(-1).numpy()
        dfa = test_allowed.double().numpy()
        dfa = dfa / np.clip(dfa.sum(-1, keepdims=True), 1, None)
        heads_df = ngram_head_scores(model, test_ids, s.orders)
        keep = scored_positions(test_ids)
        per_pos = test_allowed[:, :-1, FIRST_SYMBOL:].sum(-1).double() / len(SYMBOLS)
        res: dict = {
            "orders": list(s.orders),
            "accuracy": accuracy(logits, test_ids, test_allowed),
            "ngram_accuracy": {n: table_accuracy(ngrams[n], test_ids, test_allowed) for n in s.orders},
            "chance_accuracy": float(per_pos[keep].mean()),
            "distances": distances(probs, ngrams, dfa, test_ids),
            "uniform_attention": {int(n): float(g["uniform_attention"].iloc[0]) for n, g in heads_df.groupby("n")},
            "top_ngram_heads": {int(n): g.nlargest(3, "score")[["layer", "head", "score"]].to_dict("records")
                                for n, g in heads_df.groupby("n")},
            "ablation": ablations(model, test_ids, test_allowed, heads_df, ngrams, s),
        }
    return res, history, heads_df


def main(argv: list[str] | None = None) -> None:
    parser = study.arguments(__doc__, OUT)
    parser.add_argument("--steps", type=int, default=Settings.steps)
    parser.add_argument("--seed", type=int, default=Settings.seed)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    with output_folder(args.out, kind=KIND) as out:  # checked and locked before any training
        if args.render:
            return render(out)
        train_and_write(args, out)


def train_and_write(args, out: OutputFolder) -> None:
    s = Settings(steps=args.steps, seed=args.seed)
    command = "python case_studies/regular_languages.py"
    if args.smoke:
        s = dataclasses.replace(s, train_dfas=40, test_dfas=8, steps=6, eval_every=3, batch=4, length=48,
                                d_model=32, d_mlp=64, random_sets=2)
        command += " --smoke"
    watch = study.Stopwatch()
    res, history, heads_df = run(s, watch)
    study.write_tables(out, {"training.parquet": history, "ngram_heads.parquet": heads_df})
    write_report(out, history, heads_df, res, {"command": command, "settings": dataclasses.asdict(s),
                                               "seconds": watch.done()})


def write_report(out: OutputFolder, history: pd.DataFrame, heads_df: pd.DataFrame, res: dict, meta: dict) -> None:
    s = Settings(**{k: tuple(v) if isinstance(v, list) else v for k, v in meta["settings"].items()})
    written = study.write_figures(figures(history, heads_df, res), out)
    write_json(out, "summary.json", {**meta, "result": res}, end="", default=str)
    text = markdown(res, s, meta["seconds"], meta["command"], written)
    out.write_text("summary.md", text)
    print(text)


def render(out: OutputFolder) -> None:
    """The summary and figures again from a finished run's files (no training)."""
    out.keep("training.parquet", "ngram_heads.parquet")
    meta = json.loads((out.path / "summary.json").read_text())
    res = meta.pop("result")
    res["ngram_accuracy"] = {int(k): v for k, v in res["ngram_accuracy"].items()}
    res["uniform_attention"] = {int(k): v for k, v in res["uniform_attention"].items()}
    res["top_ngram_heads"] = {int(k): v for k, v in res["top_ngram_heads"].items()}
    write_report(out, pd.read_parquet(out.path / "training.parquet"), pd.read_parquet(out.path / "ngram_heads.parquet"),
                 res, meta)


if __name__ == "__main__":
    main()
