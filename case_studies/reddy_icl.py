"""Case study: abrupt in-context learning in Reddy's minimal network (ICLR'24, arXiv 2312.03002).

Reddy's data: K classes with Gaussian means mu_k ~ N(0, I/D) in D dimensions, each class tied to one
of L labels (class k has label k mod L; label tokens are fixed random vectors ~ N(0, I/D)); an item
of class k is (mu_k + eps * eta) / sqrt(1 + eps^2) with eta ~ N(0, I/D). A sequence holds N
item-label pairs and a target item (2N + 1 tokens); the network predicts the target's label. With
burstiness B the context holds N / B classes B times each and the target's class is among them
(a fraction p_B of sequences; B = 0: every context item and the target drawn independently);
classes are drawn with Zipf weights k^-alpha. Each token is [one-hot position in P = 65
dimensions, shifted by a random offset per sequence | D-dimensional content].

The network: two causal attention-only layers with one head each (residual stream, no MLP, no
normalisation), then a three-layer MLP classifier over the L labels read at the target.

Tests, on held-out sequences each evaluation: ICL on novel classes (fresh means, each given a
random distinct label, N / 2 classes twice each, target among them: only the context tells the
label; chance 1/L, or 1/4 for a guess among the context labels); label flips (training classes in
the same arrangement with label + 1 mod L: ICL follows the flip, IWL keeps the trained label); IWL
(B = 0 sequences: the target's class is rarely in context). Progress measures on the novel-class
test: item-label association (layer 1: attention of each label token to its own item), target-label
association (layer 2: attention of the target to the labels of its own class's items), and
context-label accuracy (share of predictions that are one of the context's labels).

Runs B = 0, 1, 2, 4 (default) and writes ``case_studies/results/reddy_icl/``: ``summary.md``,
``history.parquet`` (every evaluation of every run), ``summary.json`` and the figures
(``icl_accuracy.html``, ``progress.html``, sharing ``plotly.min.js``; PNG too when kaleido is
installed).

    python case_studies/reddy_icl.py                 # B = 0, 1, 2, 4 (seed 0; --seeds 0,1 for more) and the
                                                     # K = 512 control over 25000 steps (summary.md: the time)

Finished runs are kept in ``--checkpoints`` (one file per run, outside the results) and reused;
``--train-only main|control`` trains one group there and writes nothing, so the groups can train
side by side before the default command collects them.
    python case_studies/reddy_icl.py --smoke --out DIR   # a tiny run of every part (seconds)
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from _study import Stopwatch, arguments, files_line, table, write_figures, write_tables
from _study import fmt as fmt_number
from torch import nn

from interp.results.folders import OutputFolder, output_folder
from interp.results.protocol import write_json

OUT = Path(__file__).parent / "results" / "reddy_icl"
KIND = "reddy_icl"  # the report kind of the files this study writes (interp.results.folders)
CHECKPOINTS = Path.home() / ".cache" / "interp-case-studies" / KIND  # finished runs, outside the results


# The K = 512 control runs (Reddy's Fig. 1 setting) train this long: at the main runs' 2500 steps
# they have memorised the classes and ICL has not risen yet.
CONTROL_STEPS = 25_000
CONTROL_EVAL_EVERY = 250


@dataclass(frozen=True)
class Config:
    D: int = 63  # item and label dimension
    N: int = 8  # item-label pairs per sequence
    L: int = 32  # labels
    K: int = 8192  # classes
    eps: float = 0.1  # within-class noise
    alpha: float = 0.0  # Zipf exponent of class frequencies
    p_bursty: float = 1.0  # share of bursty sequences
    P: int = 65  # one-hot position dimensions (positions shifted by a random offset)
    hidden: int = 128  # classifier width
    batch: int = 64
    lr: float = 2e-3
    steps: int = 2500
    eval_every: int = 50
    eval_size: int = 500

    @property
    def width(self) -> int:
        return self.P + self.D

    @property
    def length(self) -> int:
        return 2 * self.N + 1


# -- data -----------------------------------------------------------------------------------------
class Task:
    """Reddy's classification task: class means, label vectors, and sequence samplers."""

    def __init__(self, cfg: Config, seed: int):
        self.cfg = cfg
        g = torch.Generator().manual_seed(seed)
        self.means = torch.randn(cfg.K, cfg.D, generator=g) / math.sqrt(cfg.D)
        self.label_vectors = torch.randn(cfg.L, cfg.D, generator=g) / math.sqrt(cfg.D)
        self.class_labels = torch.arange(cfg.K) % cfg.L
        weights = torch.arange(1, cfg.K + 1, dtype=torch.float64) ** -cfg.alpha
        self.class_cdf = (weights / weights.sum()).cumsum(0)

    def items(self, means: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        noise = torch.randn(means.shape, generator=g) / math.sqrt(self.cfg.D)
        return (means + self.cfg.eps * noise) / math.sqrt(1 + self.cfg.eps ** 2)

    def _classes(self, n: int, k: int, g: torch.Generator) -> torch.Tensor:
        """[n, k] classes drawn with Zipf weights (inverse CDF of uniform draws)."""
        u = torch.rand(n, k, generator=g, dtype=torch.float64)
        return torch.searchsorted(self.class_cdf, u * self.class_cdf[-1]).clamp(max=self.cfg.K - 1)

    def _bursty(self, n: int, burst: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Context classes [n, N] (N / burst classes, burst times each, shuffled) and target classes [n]."""
        N = self.cfg.N
        distinct = self._classes(n, N // burst, g)
        ctx = distinct.repeat_interleave(burst, dim=1)
        order = torch.argsort(torch.rand(n, N, generator=g), dim=1)
        ctx = torch.gather(ctx, 1, order)
        target = torch.gather(ctx, 1, torch.randint(N, (n, 1), generator=g))[:, 0]
        return ctx, target

    def classes(self, n: int, burst: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Training classes: a share p_bursty bursty with ``burst`` (B = 0: all independent)."""
        iid_ctx, iid_target = self._classes(n, self.cfg.N, g), self._classes(n, 1, g)[:, 0]
        if burst == 0:
            return iid_ctx, iid_target
        ctx, target = self._bursty(n, burst, g)
        keep = torch.rand(n, generator=g) < self.cfg.p_bursty
        return torch.where(keep[:, None], ctx, iid_ctx), torch.where(keep, target, iid_target)

    def tokens(self, items: torch.Tensor, labels: torch.Tensor, target: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        """[n, 2N + 1, P + D]: item, label, ..., item, label, target; one-hot positions shifted at random."""
        cfg = self.cfg
        n = items.shape[0]
        content = torch.zeros(n, cfg.length, cfg.D)
        content[:, 0 : 2 * cfg.N : 2] = items
        content[:, 1 : 2 * cfg.N : 2] = self.label_vectors[labels]
        content[:, -1] = target
        shift = torch.randint(cfg.P - cfg.length + 1, (n, 1), generator=g)
        pos = F.one_hot(shift + torch.arange(cfg.length), cfg.P).float()
        return torch.cat([pos, content], dim=-1)

    def batch(self, n: int, burst: int, g: torch.Generator) -> dict[str, torch.Tensor]:
        ctx, target = self.classes(n, burst, g)
        labels = self.class_labels[ctx]
        x = self.tokens(self.items(self.means[ctx], g), labels, self.items(self.means[target], g), g)
        return {"x": x, "y": self.class_labels[target], "ctx_labels": labels, "same": ctx == target[:, None]}

    def novel(self, n: int, g: torch.Generator, flip: bool = False) -> dict[str, torch.Tensor]:
        """N / 2 classes twice each, target among them. Novel classes with random distinct labels,
        or (``flip``) training classes whose context labels are moved to label + 1 mod L."""
        cfg = self.cfg
        half = cfg.N // 2
        slots = torch.arange(half).repeat_interleave(2).expand(n, -1)
        slots = torch.gather(slots, 1, torch.argsort(torch.rand(n, cfg.N, generator=g), dim=1))
        target_slot = torch.gather(slots, 1, torch.randint(cfg.N, (n, 1), generator=g))[:, 0]
        if flip:
            classes = torch.stack([torch.randperm(cfg.K, generator=g)[:half] for _ in range(n)])
            means = self.means[classes]
            slot_labels = (self.class_labels[classes] + 1) % cfg.L
        else:
            means = torch.randn(n, half, cfg.D, generator=g) / math.sqrt(cfg.D)
            slot_labels = torch.stack([torch.randperm(cfg.L, generator=g)[:half] for _ in range(n)])
        ctx_means = torch.gather(means, 1, slots[..., None].expand(-1, -1, cfg.D))
        labels = torch.gather(slot_labels, 1, slots)
        target_means = means[torch.arange(n), target_slot]
        x = self.tokens(self.items(ctx_means, g), labels, self.items(target_means, g), g)
        y = slot_labels[torch.arange(n), target_slot]
        out = {"x": x, "y": y, "ctx_labels": labels, "same": slots == target_slot[:, None]}
        if flip:
            out["y_trained"] = self.class_labels[classes[torch.arange(n), target_slot]]
        return out


# -- the network ----------------------------------------------------------------------------------
class Attention(nn.Module):
    """One causal attention head on the residual stream (no normalisation)."""

    def __init__(self, width: int):
        super().__init__()
        self.q, self.k, self.v = (nn.Linear(width, width, bias=False) for _ in range(3))

    def forward(self, x: torch.Tensor, last_only: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """The residual stream after the head, and its attention ``[batch, query, key]``. With
        ``last_only`` only the last position is computed (all the classifier reads)."""
        q = self.q(x[:, -1:] if last_only else x)
        scores = q @ self.k(x).transpose(1, 2) / math.sqrt(x.shape[-1])
        n = x.shape[1]
        causal = torch.ones(n, n, dtype=torch.bool).tril()[-q.shape[1]:]
        attn = scores.masked_fill(~causal, float("-inf")).softmax(-1)
        return (x[:, -1:] if last_only else x) + attn @ self.v(x), attn


class MinimalNet(nn.Module):
    """Two attention-only layers (one head each), then a three-layer MLP on the target token."""

    def __init__(self, cfg: Config):
        super().__init__()
        self.layers = nn.ModuleList([Attention(cfg.width), Attention(cfg.width)])
        self.classifier = nn.Sequential(nn.Linear(cfg.width, cfg.hidden), nn.ReLU(), nn.Linear(cfg.hidden, cfg.hidden),
                                        nn.ReLU(), nn.Linear(cfg.hidden, cfg.L))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Label logits at the target, and the attention of layer 1 (every query) and layer 2
        (the target's row only: nothing else reaches the classifier)."""
        x, a1 = self.layers[0](x)
        x, a2 = self.layers[1](x, last_only=True)
        return self.classifier(x[:, -1]), [a1, a2]


# -- measures -------------------------------------------------------------------------------------
@torch.no_grad()
def evaluate(net: MinimalNet, tests: dict[str, dict[str, torch.Tensor]], N: int) -> dict[str, float]:
    """Accuracies and progress measures on the fixed test sets."""
    out: dict[str, float] = {}
    logits, (a1, a2) = net(tests["novel"]["x"])
    t = tests["novel"]
    pred = logits.argmax(-1)
    out["icl_acc"] = float((pred == t["y"]).float().mean())
    out["context_label_acc"] = float((pred[:, None] == t["ctx_labels"]).any(1).float().mean())
    label_rows, item_cols = torch.arange(1, 2 * N, 2), torch.arange(0, 2 * N, 2)
    out["item_label_attn"] = float(a1[:, label_rows, item_cols].mean())
    target_to_labels = a2[:, -1, label_rows]  # [n, N]: the target's row
    same = t["same"].float()
    out["target_label_attn"] = float((target_to_labels * same).sum(1).mean())
    other = (target_to_labels * (1 - same)).sum(1) / (1 - same).sum(1)
    out["ih_strength"] = float(((target_to_labels * same).sum(1) / same.sum(1) - other).mean())
    logits, _ = net(tests["flip"]["x"])
    pred = logits.argmax(-1)
    out["flip_icl_acc"] = float((pred == tests["flip"]["y"]).float().mean())
    out["flip_iwl_acc"] = float((pred == tests["flip"]["y_trained"]).float().mean())
    logits, _ = net(tests["iwl"]["x"])
    out["iwl_acc"] = float((logits.argmax(-1) == tests["iwl"]["y"]).float().mean())
    return out


def train(cfg: Config, burst: int, seed: int, log=print) -> pd.DataFrame:
    """One run; returns the evaluations (step, training loss and every measure)."""
    task = Task(cfg, seed)  # the same classes and labels for every B at one seed
    g_test = torch.Generator().manual_seed(10_000 + seed)
    tests = {"novel": task.novel(cfg.eval_size, g_test), "flip": task.novel(cfg.eval_size, g_test, flip=True),
             "iwl": task.batch(cfg.eval_size, 0, g_test)}
    torch.manual_seed(seed)
    net = MinimalNet(cfg)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    g = torch.Generator().manual_seed(20_000 + 100 * seed + burst)
    rows: list[dict] = []
    losses: list[float] = []
    t0 = time.perf_counter()
    for step in range(cfg.steps + 1):
        if step % cfg.eval_every == 0:
            net.eval()
            row = {"K": cfg.K, "B": burst, "seed": seed, "step": step, "seconds": round(time.perf_counter() - t0, 1),
                   "loss": float(np.mean(losses)) if losses else float("nan"), **evaluate(net, tests, cfg.N)}
            rows.append(row)
            losses = []
            net.train()
            if step % (cfg.eval_every * 10) == 0:
                log(f"  K={cfg.K} B={burst} seed={seed} step {step}: loss {row['loss']:.3f}, ICL {row['icl_acc']:.3f}, "
                    f"IWL {row['iwl_acc']:.3f}, item-label {row['item_label_attn']:.2f}, "
                    f"target-label {row['target_label_attn']:.2f}")
        if step == cfg.steps:
            break
        b = task.batch(cfg.batch, burst, g)
        logits, _ = net(b["x"])
        loss = F.cross_entropy(logits, b["y"])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return pd.DataFrame(rows)


# -- analysis -------------------------------------------------------------------------------------
MEASURES = ("item_label_attn", "target_label_attn", "context_label_acc")


def crossing(steps: np.ndarray, values: np.ndarray, level: float, after: int = 0) -> int | None:
    """First step (at index ``after`` or later) at which ``values`` reach ``level``; None if never."""
    hit = np.nonzero(values[after:] >= level)[0]
    return None if len(hit) == 0 else int(steps[after + hit[0]])


def smooth(values: np.ndarray, width: int = 3) -> np.ndarray:
    """Centred running mean (one evaluation on 500 test sequences varies by about ±2 points)."""
    if len(values) < width:
        return values
    pad = np.pad(values, width // 2, mode="edge")
    return np.convolve(pad, np.ones(width) / width, mode="valid")


def last(run: pd.DataFrame, name: str) -> float:
    return round(float(run[name].iloc[-5:].mean()), 3)


def analyse(run: pd.DataFrame, cfg: Config) -> dict:
    """Final accuracies; whether ICL emerged and how abruptly; when the progress measures rose.

    A network that outputs one of the context's labels without knowing which scores 1 / (N / 2)
    = 0.25 on the novel-class test (four labels in context): the ICL transition is the rise from
    that level (or from where ICL started, if higher) to the final accuracy. ICL emerged when it
    ends at least 0.3 above that level; its onset, jump and end are the first evaluations (3-point
    running mean) at 10%, 50% and 90% of the rise. A progress measure's onset is the first
    evaluation, after its minimum, at 10% of its rise from that minimum to its maximum.
    """
    steps = run["step"].to_numpy()
    icl = smooth(run["icl_acc"].to_numpy())
    guess = 1 / (cfg.N // 2)
    base, end = max(guess, float(icl[0])), float(icl[-5:].mean())
    res: dict = {"K": int(run["K"].iloc[0]), "B": int(run["B"].iloc[0]), "seed": int(run["seed"].iloc[0]),
                 "icl_start": round(float(icl[0]), 3), "icl_plateau_level": round(base, 3)}
    for name in ("icl_acc", "context_label_acc", "iwl_acc", "flip_icl_acc", "flip_iwl_acc", *MEASURES[:2]):
        res[f"{name}_final"] = last(run, name)
    res["steps"] = int(steps[-1])
    res["iwl_acc_peak"] = round(float(smooth(run["iwl_acc"].to_numpy()).max()), 3)
    res["icl_emerged"] = bool(end - base >= 0.3)
    if not res["icl_emerged"]:
        return res
    t10, t50, t90 = (crossing(steps, icl, base + f * (end - base)) for f in (0.1, 0.5, 0.9))
    res.update(icl_onset=t10, icl_jump=t50, icl_done=t90,
               rise_steps=None if t10 is None or t90 is None else t90 - t10)
    res["rise_share"] = None if res["rise_steps"] is None else round(res["rise_steps"] / cfg.steps, 3)
    res["plateau_steps"] = t10
    for name in MEASURES:
        v = smooth(run[name].to_numpy())
        top = int(np.argmax(v))
        low = int(np.argmin(v[: top + 1]))
        v0, v1 = float(v[low]), float(v[top])
        res[f"{name}_min"], res[f"{name}_max"] = round(v0, 3), round(v1, 3)
        res[f"{name}_onset"] = crossing(steps, v, v0 + 0.1 * (v1 - v0), after=low) if v1 > v0 else None
        res[f"{name}_half"] = crossing(steps, v, v0 + 0.5 * (v1 - v0), after=low) if v1 > v0 else None
        at = run.loc[run["step"] == t10, name]
        res[f"{name}_at_icl_onset"] = round(float(at.iloc[0]), 3) if len(at) else None
    return res


# -- figures and summary --------------------------------------------------------------------------
COLORS = {0: "#7f7f7f", 1: "#1f77b4", 2: "#ff7f0e", 4: "#2ca02c"}
LABELS = {"icl_acc": "ICL accuracy (novel classes)", "item_label_attn": "layer 1: label → its own item",
          "target_label_attn": "layer 2: target → same-class labels", "context_label_acc": "context-label accuracy"}


def figures(history: pd.DataFrame, main_k: int):
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    acc = make_subplots(rows=1, cols=2, subplot_titles=("ICL: novel classes", "IWL: classes seen in training"))
    seed0 = int(history["seed"].min())
    for (K, B, seed), run in history[history["K"] == main_k].groupby(["K", "B", "seed"]):
        control = K != main_k
        color = "#9467bd" if control else COLORS.get(int(B), "#8c564b")
        dash = "dash" if control else ("solid" if seed == seed0 else "dot")
        name = f"B={B} seed {seed}" + (f" (K={K})" if control else "")
        for col, metric in ((1, "icl_acc"), (2, "iwl_acc")):
            acc.add_trace(go.Scatter(x=run["step"], y=run[metric], mode="lines", name=name, legendgroup=name,
                                     line={"color": color, "dash": dash}, showlegend=col == 1), row=1, col=col)
    acc.add_hline(y=0.25, line={"dash": "dash", "color": "#bbb"}, row=1, col=1)  # type: ignore[arg-type]
    acc.update_yaxes(range=[0, 1.02], title_text="accuracy")
    acc.update_xaxes(title_text="training step")
    acc.update_layout(title=f"Reddy's minimal network, K={main_k}: accuracy by burstiness B "
                            "(grey dashed line: a guess among the four context labels)", height=460, width=1150)
    main = history[(history["K"] == main_k) & (history["B"] > 0) & (history["seed"] == seed0)]
    bursty = sorted(main["B"].unique())
    prog = make_subplots(rows=1, cols=max(1, len(bursty)), subplot_titles=[f"B = {B}" for B in bursty],
                         shared_yaxes=True)
    palette = {"icl_acc": "black", "item_label_attn": "#d62728", "target_label_attn": "#1f77b4",
               "context_label_acc": "#2ca02c"}
    for col, B in enumerate(bursty, start=1):
        run = main[main["B"] == B]
        for metric, label in LABELS.items():
            prog.add_trace(go.Scatter(x=run["step"], y=run[metric], mode="lines", name=label, legendgroup=metric,
                                      line={"color": palette[metric], "width": 2.5 if metric == "icl_acc" else 1.5},
                                      showlegend=col == 1), row=1, col=col)
    prog.update_yaxes(range=[0, 1.02])
    prog.update_xaxes(title_text="training step")
    prog.update_layout(title=f"Progress measures and ICL accuracy against step (K={main_k}, seed {seed0})",
                       height=420, width=1150)
    figs = {"icl_accuracy": acc, "progress": prog}
    controls = history[history["K"] != main_k]
    if len(controls):
        seeds = sorted(controls["seed"].unique())
        ctl = make_subplots(rows=1, cols=len(seeds), subplot_titles=[f"seed {s}" for s in seeds], shared_yaxes=True)
        for col, seed in enumerate(seeds, start=1):
            run = controls[controls["seed"] == seed]
            for metric, label in {**LABELS, "iwl_acc": "IWL accuracy"}.items():
                ctl.add_trace(go.Scatter(x=run["step"], y=run[metric], mode="lines", name=label, legendgroup=metric,
                                         line={"color": {**palette, "iwl_acc": "#9467bd"}[metric],
                                               "width": 2.5 if metric in ("icl_acc", "iwl_acc") else 1.5},
                                         showlegend=col == 1), row=1, col=col)
            ctl.add_hline(y=0.25, line={"dash": "dash", "color": "#bbb"}, row=1, col=col)  # type: ignore[arg-type]
        ctl.update_yaxes(range=[0, 1.02])
        ctl.update_xaxes(title_text="training step")
        ctl.update_layout(title=f"K = {int(controls['K'].iloc[0])}, B = 2 over the longer schedule: ICL, IWL and the "
                                "progress measures", height=420, width=1150)
        figs["control"] = ctl
    return figs


fmt = partial(fmt_number, whole_from=10)  # steps as whole numbers, shares and accuracies with 3 decimals


def joined(values) -> str:
    return ", ".join(fmt(v) for v in values)


def markdown(results: list[dict], cfg: Config, seconds: float, command: str, written: list[str],
             control: Config | None = None, history: pd.DataFrame | None = None) -> str:
    df = pd.DataFrame(results)
    lines = ["# Reddy's minimal ICL network: does in-context learning emerge abruptly, and only with bursty data?", "",
             f"Produced by `{command}`: {seconds / 60:.1f} min of training on 2 shared CPU cores, summed over the "
             "runs (torch threads: 1; each finished run is kept in `--checkpoints`, so runs may train side by side "
             "with `--train-only`). "
             f"Settings: D={cfg.D}, N={cfg.N}, L={cfg.L}, K={cfg.K} (and the controls named), eps={cfg.eps}, "
             f"Zipf alpha={cfg.alpha}, p_B={cfg.p_bursty}, P={cfg.P}; Adam lr {cfg.lr}, batch {cfg.batch}, "
             f"{cfg.steps} steps; evaluation every {cfg.eval_every} steps on {cfg.eval_size} held-out sequences per "
             f"test (novel classes: {cfg.N // 2} classes twice each). Chance: 1/L = {1 / cfg.L:.3f}; a guess among the "
             f"{cfg.N // 2} labels of a test context: {1 / (cfg.N // 2):.2f}. The test contexts are laid out as B = 2 "
             f"training contexts are; B = 1 trains on {cfg.N} classes once each and B = 4 on {cfg.N // 4} classes four "
             "times each. K is larger than the paper's typical 512 so that memorising the classes is slow: the "
             + (f"control rows keep K = {control.K} (Reddy's Fig. 1 setting: K = 512, B = 2), trained for "
                f"{control.steps} steps and evaluated every {control.eval_every}." if control else "no control runs."),
             "",
             "## Accuracy at the end of training (mean of the last five evaluations)", "",
             "| K | B | seed | ICL (novel classes) | context-label acc. | IWL | flip: follows context | "
             "flip: keeps trained label | ICL emerged | plateau (steps) | 10%→90% rise (steps) | rise / training |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        rise = "—" if not r["icl_emerged"] else f"{fmt(r['rise_steps'])} ({fmt(r['icl_onset'])}→{fmt(r['icl_done'])})"
        lines.append(f"| {r['K']} | {r['B']} | {r['seed']} | {fmt(r['icl_acc_final'])} | {fmt(r['context_label_acc_final'])} | "
                     f"{fmt(r['iwl_acc_final'])} | {fmt(r['flip_icl_acc_final'])} | {fmt(r['flip_iwl_acc_final'])} | "
                     f"{'yes' if r['icl_emerged'] else 'no'} | {fmt(r.get('plateau_steps'))} | {rise} | "
                     f"{fmt(r.get('rise_share'))} |")
    emerged = df[df["icl_emerged"]] if len(df) else df
    lines += ["", "## Progress measures against the ICL transition (runs where ICL emerged)", "",
              "ICL onset / jump: first evaluation at 10% / 50% of the rise from the 0.25 plateau. A measure's onset: "
              "first evaluation after its minimum at 10% of its rise to its maximum; half: at 50% (3-point running "
              "means).", "",
              "| K | B | seed | ICL onset / jump | item→label attn.: min → at ICL onset → max; onset, half | "
              "target→label attn.: min → at ICL onset → max; onset, half | context-label acc.: onset, half |",
              "|---|---|---|---|---|---|---|"]
    for r in emerged.to_dict("records"):
        cell = {n: (f"{fmt(r[f'{n}_min'])} → {fmt(r[f'{n}_at_icl_onset'])} → {fmt(r[f'{n}_max'])}; "
                    f"{fmt(r[f'{n}_onset'])}, {fmt(r[f'{n}_half'])}") for n in MEASURES[:2]}
        lines.append(f"| {r['K']} | {r['B']} | {r['seed']} | {fmt(r['icl_onset'])} / {fmt(r['icl_jump'])} | "
                     f"{cell['item_label_attn']} | {cell['target_label_attn']} | "
                     f"{fmt(r['context_label_acc_onset'])}, {fmt(r['context_label_acc_half'])} |")
    controls = history[history["K"] != cfg.K] if history is not None else pd.DataFrame()
    if len(controls):
        K = int(controls["K"].iloc[0])
        lines += ["", f"## K = {K}, B = 2 over the longer schedule", "",
                  "ICL and IWL accuracy, context-label accuracy, and the layer-1 label→item and layer-2 "
                  f"target→same-class-label attention along training (3-point running means; one evaluation is "
                  f"{cfg.eval_size} sequences per test).", ""]
        step_every = max(1, int(controls["step"].max()) // 10)
        header = ["seed", "step", "ICL", "IWL", "context-label acc.", "item→label attn.", "target→label attn."]
        rows = []
        for seed, run in controls.groupby("seed"):
            sm = {m: smooth(run[m].to_numpy()) for m in ("icl_acc", "iwl_acc", *MEASURES)}
            for i, step in enumerate(run["step"].to_numpy()):
                if step % step_every == 0:
                    rows.append([seed, int(step), *(fmt(float(sm[m][i])) for m in
                                                    ("icl_acc", "iwl_acc", "context_label_acc", *MEASURES[:2]))])
        lines += table(header, rows)
    lines += ["", "## Against the paper", ""] + table(["claim (Reddy)", "here", "verdict"], reading(df, cfg))
    lines += ["", files_line(["summary.md", "summary.json", "history.parquet", *written],
                             "`icl_accuracy.html`: ICL and IWL accuracy against step for every run; `progress.html`: the "
                             "progress measures with ICL accuracy for each bursty run of the first seed; `control.html`: the "
                             "K = 512 runs over their longer schedule.")]
    return "\n".join(lines) + "\n"


def reading(df: pd.DataFrame, cfg: Config) -> list[list[str]]:
    """The 'against the paper' table: claim, what these runs show, agree / partly / disagree."""
    if not len(df):
        return []
    out = []
    main = df[df["K"] == cfg.K]
    iid, bursty = main[main["B"] == 0], main[main["B"] > 0]
    if len(iid):
        ok = not iid["icl_emerged"].any() and float(iid["icl_acc_final"].max()) < 0.25
        out.append(["Without bursty sequences (B = 0) ICL does not emerge",
                    f"K = {cfg.K}, B = 0: ICL ends at {joined(iid['icl_acc_final'])} against chance {1 / cfg.L:.3f} "
                    f"(context-label accuracy {joined(iid['context_label_acc_final'])}; IWL "
                    f"{joined(iid['iwl_acc_final'])})", "agree" if ok else "disagree"])
    em = bursty[bursty["icl_emerged"]]
    if len(bursty):
        by_b = "; ".join(
            f"B = {B}: {len(part[part['icl_emerged']])} of {len(part)} runs, ending at {joined(part['icl_acc_final'])}"
            for B, part in bursty.groupby("B"))
        out.append(["With bursty sequences ICL emerges on novel classes (K large)",
                    f"K = {cfg.K}: {by_b}", "agree" if len(em) == len(bursty) else "partly" if len(em) else "disagree"])
    if len(em):
        med = float(em["rise_share"].dropna().median()) if em["rise_share"].notna().any() else float("nan")
        onsets = em.groupby("B")["icl_onset"].median().sort_values(kind="stable")
        out.append(["The transition is abrupt: a sharp rise after a long plateau",
                    f"K = {cfg.K}: the 10%→90% rise takes a median {fmt(float(em['rise_steps'].median()))} steps "
                    f"({fmt(med)} of training) after a plateau of {fmt(float(em['icl_onset'].median()))} steps (median "
                    "onset by B: " + ", ".join(f"B = {B}: {fmt(float(v))}" for B, v in onsets.items()) + ")",
                    "agree" if med <= 0.25 else "partly (a rise, but not abrupt)"])
        rows = em.to_dict("records")
        count = {n: sum(1 for r in rows if r[f"{n}_onset"] is not None and r["icl_onset"] is not None
                        and r[f"{n}_onset"] <= r["icl_onset"]) for n in MEASURES}
        up = sum(1 for r in rows if r["target_label_attn_at_icl_onset"] is not None
                 and r["target_label_attn_at_icl_onset"] > r["target_label_attn_min"])
        out.append(["The progress measures (item-label and target-label attention, context-label accuracy) rise "
                    "before the ICL jump",
                    f"of {len(rows)} runs with ICL at K = {cfg.K}: context-label accuracy first in "
                    f"{count['context_label_acc']}, layer-2 target→same-class-label attention at or before ICL's onset "
                    f"in {count['target_label_attn']} (above its minimum at the onset in {up}), layer-1 label→item "
                    f"attention in {count['item_label_attn']}",
                    "agree" if min(count.values()) == len(rows) else "partly"])
        out.append(["A network with ICL reads labels from the context, not its weights (label flips)",
                    f"flipped sequences: follows the context on {joined(em['flip_icl_acc_final'])}, keeps the trained "
                    f"label on {joined(em['flip_iwl_acc_final'])}",
                    "agree" if float(em["flip_icl_acc_final"].min()) > 0.5 else "partly"])
    controls = df[df["K"] != cfg.K]
    if len(controls):
        K = int(controls["K"].iloc[0])
        ce = controls[controls["icl_emerged"]]
        rise = (f"; a plateau until step {joined(ce['icl_onset'])}, then a 10%→90% rise over {joined(ce['rise_steps'])} "
                f"steps ({joined(ce['rise_share'])} of training; the K = {cfg.K} runs: median "
                f"{fmt(float(em['rise_share'].median())) if len(em) else '—'})" if len(ce) else "")
        out.append([f"K = {K}, B = 2 (Fig. 1): ICL emerges after a plateau, abruptly, with the layer-2 "
                     "target→label attention rising with it",
                     f"{len(controls)} run(s) of {int(controls['steps'].iloc[0])} steps: ICL ends at "
                     f"{joined(controls['icl_acc_final'])}, IWL at {joined(controls['iwl_acc_final'])} (its peak: "
                     f"{joined(controls['iwl_acc_peak'])}){rise}; the target→same-class-label attention ends at "
                     f"{joined(controls['target_label_attn_final'])}",
                     "disagree (no ICL within the schedule)" if not len(ce) else
                     "agree" if float(ce["rise_share"].max()) <= 0.25 and len(ce) == len(controls) else
                     "partly (ICL emerges after memorising, but gradually)" if len(ce) == len(controls) else "partly"])
    return out


def run_all(runs: list[tuple[Config, int, int]], cache: Path | None = None) -> tuple[pd.DataFrame, list[dict]]:
    """Train (or, with ``cache``, load the finished history of) every run; histories and analyses."""
    histories, results = [], []
    for cfg, B, seed in runs:
        if B and cfg.N % B:
            raise SystemExit(f"B = {B} must divide N = {cfg.N}")
        run = cached_run(cfg, B, seed, cache)
        histories.append(run)
        results.append(analyse(run, cfg))
    return pd.concat(histories, ignore_index=True), results


def cached_run(cfg: Config, B: int, seed: int, cache: Path | None) -> pd.DataFrame:
    """One run's history, from ``cache`` when this exact run (config, B, seed) finished before; a
    finished run is written there, so runs can train side by side (``--train-only``) or after a stop."""
    if cache is None:
        return train(cfg, B, seed)
    import hashlib

    key = json.dumps({**dataclasses.asdict(cfg), "B": B, "seed": seed}, sort_keys=True)
    path = cache / f"{hashlib.sha256(key.encode()).hexdigest()[:16]}.pt"  # a checkpoint, not a result table
    if path.exists():
        return pd.DataFrame(torch.load(path))
    run = train(cfg, B, seed)
    cache.mkdir(parents=True, exist_ok=True)
    torch.save(run.to_dict("list"), path.with_suffix(".tmp"))
    path.with_suffix(".tmp").replace(path)
    return run


def main(argv: list[str] | None = None) -> None:
    parser = arguments(__doc__, OUT)
    parser.add_argument("--bursts", default="0,1,2,4", help="burstiness settings B (each divides N)")
    parser.add_argument("--seeds", default="0", help="seeds per setting")
    parser.add_argument("--steps", type=int, default=Config.steps)
    parser.add_argument("--K", type=int, default=Config.K, help="classes")
    parser.add_argument("--control-K", type=int, default=512,
                        help="classes of the control runs (B = 2); 0 for none")
    parser.add_argument("--control-seeds", default="0", help="seeds of the control runs")
    parser.add_argument("--control-steps", type=int, default=CONTROL_STEPS,
                        help="training steps of the control runs (the paper trains far longer than the main runs)")
    parser.add_argument("--alpha", type=float, default=Config.alpha, help="Zipf exponent")
    parser.add_argument("--checkpoints", type=Path, default=CHECKPOINTS,
                        help="where finished runs are kept (one file per run) and reused from")
    parser.add_argument("--train-only", choices=("main", "control"),
                        help="train the main or the control runs into --checkpoints and write no results, so that "
                             "they can train side by side before the default command collects them")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    if args.train_only:
        runs, _ = plan(args)
        run_all([r for r in runs if (r[0].K != args.K) == (args.train_only == "control")], args.checkpoints)
        return None
    with output_folder(args.out, kind=KIND) as out:  # checked and locked before any training
        if args.render:
            return render(out)
        train_and_write(args, out)


def plan(args) -> tuple[list[tuple[Config, int, int]], dict]:
    """The runs the arguments ask for, and what the summary records about them."""
    cfg = Config(steps=args.steps, K=args.K, alpha=args.alpha)
    bursts, seeds = [int(b) for b in args.bursts.split(",")], [int(s) for s in args.seeds.split(",")]
    command = "python case_studies/reddy_icl.py"
    control_seeds = [int(s) for s in args.control_seeds.split(",")]
    control = dataclasses.replace(cfg, K=args.control_K, steps=args.control_steps, eval_every=CONTROL_EVAL_EVERY)
    if args.smoke:
        cfg = dataclasses.replace(cfg, steps=40, eval_every=10, eval_size=64, batch=32, K=256)
        bursts, seeds, command = [0, 2], [0], command + " --smoke"
        control, control_seeds = dataclasses.replace(cfg, K=64, steps=60), [0]
    runs = [(cfg, B, seed) for B in bursts for seed in seeds]
    if args.control_K:
        runs += [(control, 2, seed) for seed in control_seeds]
    return runs, {"command": command, "config": dataclasses.asdict(cfg), "bursts": bursts, "seeds": seeds,
                  "control_K": args.control_K, "control_config": dataclasses.asdict(control),
                  "control_seeds": control_seeds}


def train_and_write(args, out: OutputFolder) -> None:
    runs, meta = plan(args)
    cfg = Config(**meta["config"])
    watch = Stopwatch()
    history, results = run_all(runs, None if args.smoke else args.checkpoints)
    write_tables(out, {"history.parquet": history})
    meta["seconds"] = watch.done()["total"]
    meta["train_seconds"] = round(float(history.groupby(["K", "B", "seed"])["seconds"].max().sum()), 1)
    write_report(out, history, results, cfg, meta)


def write_report(out: OutputFolder, history: pd.DataFrame, results: list[dict], cfg: Config, meta: dict) -> None:
    written = write_figures(figures(history, cfg.K), out)
    write_json(out, "summary.json", {**meta, "results": results}, end="")
    control = Config(**meta["control_config"]) if meta.get("control_K") else None
    text = markdown(results, cfg, meta.get("train_seconds", meta["seconds"]), meta["command"], written, control,
                    history)
    out.write_text("summary.md", text)
    print(text)


def render(out: OutputFolder) -> None:
    """The summary and figures again from a finished run's files (the analysis is rerun, not the training)."""
    meta = json.loads((out.path / "summary.json").read_text())
    meta.pop("results", None)
    cfg, control = Config(**meta["config"]), Config(**meta["control_config"])
    history = pd.read_parquet(out.path / "history.parquet")
    out.keep("history.parquet")
    results = []
    for (K, _B, _seed), run in history.groupby(["K", "B", "seed"], sort=False):
        results.append(analyse(run.reset_index(drop=True), cfg if K == cfg.K else control))
    write_report(out, history, results, cfg, meta)


if __name__ == "__main__":
    main()
