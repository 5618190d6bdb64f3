"""Case study: induction heads as they form (Olsson et al. 2022, "In-context Learning and Induction Heads").

Trains a small attention-only Llama (a Hugging Face ``LlamaConfig`` whose MLPs have no units: 3
layers, 8 heads of 16 dimensions, d_model 64, rotary positions, a byte vocabulary: the 69
characters of the text plus a BOS token), like Olsson et al.'s small attention-only models, on the
shipped public-domain text (Alice's Adventures in Wonderland, ``interp.models.corpus``; the first 90% for
training, the last 10% held out) on the CPU, saving a checkpoint every ``--save-every`` steps as a
Hugging Face folder with a ``trainer_state.json``.

Training windows: 128 characters from a random place in the text, in which three passages of 16
to 40 characters recur later in the same window (each copied from a random place to a random later
place, over what stood there), as names and phrases recur in longer texts. On plain windows of this
130k-character text such a model learns n-gram statistics and no induction head within this budget
(the summary says what plain training gave); ``--recur 0`` trains on plain windows.

It then scans every checkpoint with our CLI,

    interp heads WORK/checkpoints/checkpoint-* --out WORK/scans --scores prev_token,duplicate,induction \
        --lengths 25,50 --no-causal-checks --timeline-scores prev_token,induction

(repeated random tokens of 25 and 50, 8 each: Olsson et al.'s prefix-matching protocol within
the trained context), and sets the timeline beside the in-context loss measured at each
checkpoint: the mean loss at tokens 112-127 of a 128-token context minus the mean loss at tokens
16-31 (Olsson et al.: token 500 minus token 50 of 512), on two held-out sets:

- held-out text: windows of the held-out text starting every 16 characters, so that the early and
  the late tokens are the same text (random windows would compare different text at the two places);
- held-out text with a recurrence: the same windows with characters 32-79 repeated at 80-127,
  so that the late tokens lie in a passage seen earlier in the window.

It finds the window in which each of the induction score and the in-context losses makes 10% to
90% of its change and says whether they change together, in one abrupt window, and where. The top
induction heads of the last checkpoint are checked causally (mean-ablating them against random
heads, loss on repeated tokens).

Writes ``case_studies/results/induction_emergence/``: ``summary.md``, ``summary.json``,
``training.parquet`` (per checkpoint: step, training loss, and per held-out set the loss, the
early and late losses and the in-context loss), ``loss_by_position.parquet`` (held-out loss at
each position, per checkpoint and set), ``timeline.parquet`` (the CLI's table: step, layer, head,
score, value) and the figures ``emergence.html`` and ``loss_by_position.html`` (sharing
``plotly.min.js``; PNG too when kaleido is installed). Checkpoints and the per-checkpoint reports
stay in ``--work``.

    python case_studies/induction_emergence.py                     # ~10-15 min on 2 shared CPU cores
    python case_studies/induction_emergence.py --smoke --out DIR   # a tiny run of every part
    python case_studies/induction_emergence.py --render            # summary and figures from the saved tables
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from _study import (
    Stopwatch,
    adamw,
    arguments,
    char_tokenizer,
    files_line,
    fmt,
    llama,
    table,
    train_step,
    write_figures,
    write_tables,
)

from interp.core.sites import head_label
from interp.models.corpus import text as corpus_text
from interp.results.atomic import atomic_write_text
from interp.results.folders import OutputFolder, output_folder
from interp.results.protocol import write_json
from interp.results.strict_json import dumps

OUT = Path(__file__).parent / "results" / "induction_emergence"
WORK = Path(tempfile.gettempdir()) / "interp-case-studies" / "induction_emergence"
KIND = "induction_emergence"  # the report kind of the files this study writes (interp.results.folders)
SETS = {"text": "held-out text", "recur": "held-out text with a recurrence"}


@dataclass(frozen=True)
class Settings:
    layers: int = 3
    heads: int = 8
    d_model: int = 64
    head_dim: int = 16
    d_mlp: int = 0  # attention-only
    rope_theta: float = 10_000.0
    init_std: float = 0.02
    ctx: int = 128  # characters per training window (BOS added in front)
    batch: int = 16
    lr: float = 3e-3
    warmup: int = 50
    weight_decay: float = 0.01
    steps: int = 1800
    save_every: int = 50
    recur: float = 1.0  # share of training windows in which passages recur
    recur_len: tuple[int, int] = (16, 40)  # a passage's length, characters
    recur_count: int = 3  # passages that recur in such a window
    early: tuple[int, int] = (16, 32)  # token positions (after BOS) of the "early" loss
    late: tuple[int, int] = (112, 128)
    eval_stride: int = 16  # = the bands' width, and their distance a multiple of it: both see the same text
    eval_windows: int = 100
    eval_repeat: tuple[int, int, int] = (32, 80, 48)  # held-out recurrence: characters src..src+n again at dst
    scan_lengths: str = "25,50"  # 2 x 50 + BOS fits the trained context
    scan_samples: int = 8
    seed: int = 0


# -- data and model -------------------------------------------------------------------------------
def tokenizer():
    """One token per character of the shipped text (all ASCII), BOS = 0."""
    return char_tokenizer(["<s>", *sorted(set(corpus_text("alice")))])


def windows(ids: torch.Tensor, starts: torch.Tensor, ctx: int) -> torch.Tensor:
    """``[n, 1 + ctx]``: BOS, then ``ctx`` tokens from each start."""
    body = torch.stack([ids[i: i + ctx] for i in starts.tolist()])
    return torch.cat([torch.zeros(len(starts), 1, dtype=torch.long), body], dim=1)


def add_recurrences(batch: torch.Tensor, s: Settings, g: torch.Generator) -> torch.Tensor:
    """In a share ``s.recur`` of the windows, one passage (``s.recur_len`` characters, from
    anywhere) is written again at a later place of the same window."""
    batch = batch.clone()
    lo, hi = s.recur_len
    for row in batch:
        if float(torch.rand((), generator=g)) >= s.recur:
            continue
        for _ in range(s.recur_count):
            n = int(torch.randint(lo, hi + 1, (), generator=g))
            src = 1 + int(torch.randint(0, s.ctx - 2 * n + 1, (), generator=g))  # 1: after BOS
            dst = int(torch.randint(src + n, s.ctx - n + 2, (), generator=g))
            row[dst: dst + n] = row[src: src + n].clone()
    return batch


def eval_sets(held: torch.Tensor, s: Settings) -> dict[str, torch.Tensor]:
    """The two held-out sets (``SETS``): windows every ``eval_stride`` characters, so that every
    character of the covered text stands once in the early and once in the late band; and the same
    windows with a passage repeated (``eval_repeat``: the late band inside the copy)."""
    (a, b), (c, d) = s.early, s.late
    if b - a != s.eval_stride or d - c != s.eval_stride or (c - a) % s.eval_stride:
        raise ValueError("the early and late bands must be eval_stride wide, a multiple of it apart")
    starts = torch.arange(0, len(held) - s.ctx, s.eval_stride)[: s.eval_windows]
    text = windows(held, starts, s.ctx)
    src, dst, n = s.eval_repeat
    if not (b <= src and src + n <= dst and dst <= c and d <= dst + n <= s.ctx and (src + c - dst - a) % s.eval_stride == 0):
        raise ValueError("eval_repeat must copy from after the early band to a passage holding the late band")
    recur = text.clone()
    recur[:, 1 + dst: 1 + dst + n] = text[:, 1 + src: 1 + src + n]
    return {"text": text, "recur": recur}


@torch.no_grad()
def position_loss(model, batch: torch.Tensor, chunk: int = 50) -> torch.Tensor:
    """Mean loss at each position ``[ctx]`` (position i predicts token i of the window after BOS)."""
    model.eval()
    losses = []
    for part in batch.split(chunk):
        logits = model(input_ids=part).logits[:, :-1]
        losses.append(F.cross_entropy(logits.transpose(1, 2), part[:, 1:], reduction="none"))
    model.train()
    return torch.cat(losses).mean(0)


def measure(model, sets: dict[str, torch.Tensor], s: Settings) -> tuple[dict, dict[str, np.ndarray]]:
    row, curves = {}, {}
    for name, batch in sets.items():
        curve = position_loss(model, batch)
        early, late = (float(curve[a:b].mean()) for a, b in (s.early, s.late))
        row.update({f"{name}_loss": float(curve.mean()), f"{name}_early": early, f"{name}_late": late,
                    f"in_context_loss_{name}": late - early})
        curves[name] = curve.numpy()
    return row, curves


def train(s: Settings, work: Path, log=print) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Train, saving checkpoints; the per-checkpoint log and the held-out loss by position."""
    tok = tokenizer()
    ids = torch.tensor(tok(corpus_text("alice"))["input_ids"])
    split = int(0.9 * len(ids))
    train_ids, held = ids[:split], ids[split:]
    sets = eval_sets(held, s)
    g = torch.Generator().manual_seed(s.seed)
    model = llama(len(tok), s.layers, s.heads, s.d_model, s.head_dim, s.d_mlp, s.ctx + 1, s.seed, s.init_std,
                  s.rope_theta)
    opt, sched = adamw(model, s.lr, s.weight_decay, s.warmup)
    ckpts = work / "checkpoints"
    if ckpts.exists():
        shutil.rmtree(ckpts)
    ckpts.mkdir(parents=True)
    rows: list[dict] = []
    curves: list[dict] = []
    losses: list[float] = []
    for step in range(s.steps + 1):
        if step % s.save_every == 0 or step == s.steps:
            measured, by_pos = measure(model, sets, s)
            row = {"step": step, "train_loss": float(np.mean(losses)) if losses else float("nan"), **measured}
            rows.append(row)
            curves += [{"step": step, "set": name, "position": i, "loss": float(v)}
                       for name, curve in by_pos.items() for i, v in enumerate(curve)]
            losses = []
            folder = ckpts / f"checkpoint-{step}"
            model.save_pretrained(folder)
            tok.save_pretrained(folder)
            atomic_write_text(folder / "trainer_state.json", dumps({"global_step": step, "log_history": rows}, indent=1))
            if step % (s.save_every * 4) == 0:
                log(f"  step {step}: train {row['train_loss']:.3f}, held-out {row['text_loss']:.3f}, in-context loss "
                    f"{row['in_context_loss_text']:+.3f} (text), {row['in_context_loss_recur']:+.3f} (recurrence)")
        if step == s.steps:
            break
        starts = torch.randint(0, len(train_ids) - s.ctx, (s.batch,), generator=g)
        losses.append(train_step(model, add_recurrences(windows(train_ids, starts, s.ctx), s, g), opt, sched))
    return pd.DataFrame(rows), pd.DataFrame(curves)


def scan(s: Settings, work: Path):
    """``interp heads`` on every checkpoint (one timeline), then the table back."""
    from interp.cli import main as cli
    from interp.heads.timeline import Timeline

    argv = ["heads", str(work / "checkpoints" / "checkpoint-*"), "--out", str(work / "scans"), "--force",
            "--scores", "prev_token,duplicate,induction", "--lengths", s.scan_lengths, "--samples", str(s.scan_samples),
            "--seed", str(s.seed), "--no-causal-checks", "--timeline-scores", "prev_token,induction", "--quiet"]
    if cli(argv) != 0:
        raise SystemExit("interp heads failed")
    return Timeline.load(work / "scans")


def causal_check(s: Settings, folder: Path) -> dict:
    """Mean-ablate the top eighth of one checkpoint's heads by induction score against as many
    random heads (``interp.heads.causal.induction_ablation``: loss on the second copy)."""
    import interp
    from interp.heads.causal import induction_ablation

    model = interp.load(str(folder))
    lengths = [int(x) for x in s.scan_lengths.split(",")]
    scores = interp.heads.scan(model, ["induction"], lengths=lengths, samples=s.scan_samples, seed=s.seed,
                               progress=False, causal_checks=False)
    k = max(1, model.cfg.n_total_heads // 8)
    check = induction_ablation(model, scores, k=k, length=max(lengths), samples=s.scan_samples)
    check["top_heads"] = [head_label(h["layer"], h["head"]) for h in check.get("top_heads", [])]
    return check


# -- analysis -------------------------------------------------------------------------------------
def transition(steps: np.ndarray, values: np.ndarray, noise: float) -> dict:
    """Where a series makes its change: from its start (the first checkpoint after step 0, past the
    initial drop of the loss) to its end (mean of the last three checkpoints), the first checkpoints
    at 10%, 50% and 90% of the change and the step of the largest change between neighbouring
    checkpoints; its peak (largest value), its low and where. A change smaller than ``noise`` has
    no window."""
    start, end = float(values[1] if len(values) > 2 else values[0]), float(np.mean(values[-3:]))
    change = end - start
    top, low = int(np.argmax(values)), int(np.argmin(values))
    out: dict = {"start": start, "end": end, "change": change, "peak": float(values[top]), "peak_step": int(steps[top]),
                 "low": float(values[low]), "low_step": int(steps[low]),
                 "t10": None, "t50": None, "t90": None, "width": None, "steepest": None}
    if abs(change) < noise:
        return out
    frac = (values - start) / change
    idx = {f: next((i for i in range(1, len(values)) if frac[i] >= f), None) for f in (0.1, 0.5, 0.9)}
    t = {f: None if i is None else int(steps[i]) for f, i in idx.items()}
    diffs = np.diff(values) * np.sign(change)
    out.update(t10=t[0.1], t50=t[0.5], t90=t[0.9],
               width=None if t[0.1] is None or t[0.9] is None else t[0.9] - t[0.1],
               steepest=int(steps[1 + int(np.argmax(diffs[1:]))]) if len(diffs) > 1 else None)
    return out


def overlap(a: dict, b: dict) -> dict | None:
    """How two series' 10%→90% windows overlap (steps in common, steps spanned by both)."""
    if None in (a["t10"], a["t90"], b["t10"], b["t90"]):
        return None
    lo, hi = max(a["t10"], b["t10"]), min(a["t90"], b["t90"])
    return {"steps": max(0, hi - lo), "union": max(a["t90"], b["t90"]) - min(a["t10"], b["t10"])}


# Olsson et al. and TransformerLens demos call heads above ~0.4 induction heads; a change of a
# score below 0.05 (or of an in-context loss below 0.02 nats) is within checkpoint-to-checkpoint noise.
INDUCTION_HEAD = 0.4
NOISE = {"score": 0.05, "loss": 0.02}
NARROW = 0.25  # a window of at most a quarter of training is "narrow"


def analyse(log: pd.DataFrame, table_: pd.DataFrame, s: Settings) -> dict:
    steps = log["step"].to_numpy()
    best = {score: table_[table_["score"] == score].groupby("step")["value"].max().reindex(steps).to_numpy()
            for score in ("induction", "prev_token", "duplicate")}
    final = table_[table_["step"] == steps[-1]]
    top = {score: final[final["score"] == score].nlargest(3, "value")[["layer", "head", "value"]].to_dict("records")
           for score in ("induction", "prev_token")}
    ind = transition(steps, best["induction"], NOISE["score"])
    res: dict = {"induction": ind, "prev_token": transition(steps, best["prev_token"], NOISE["score"])}
    for name in SETS:
        icl = transition(steps, log[f"in_context_loss_{name}"].to_numpy(), NOISE["loss"])
        res[f"in_context_loss_{name}"] = icl
        res[f"overlap_{name}"] = overlap(ind, icl)
    held = log["text_loss"].to_numpy()
    res.update({
        "top_heads": top, "formed": bool(ind["peak"] >= INDUCTION_HEAD), "steps": int(steps[-1]),
        "checkpoints": len(steps), "save_every": s.save_every, "tokens": s.steps * s.batch * s.ctx,
        "epochs": s.steps * s.batch * s.ctx / (0.9 * len(corpus_text("alice"))),
        "fit": {"heldout_lowest": float(held.min()), "heldout_lowest_step": int(steps[int(held.argmin())]),
                "heldout_final": float(held[-1]), "train_final": float(log["train_loss"].iloc[-1])},
        "heads_above": {int(k): int(v) for k, v in table_[(table_["score"] == "induction")
                                                          & (table_["value"] >= INDUCTION_HEAD)].groupby("step").size().items()},
        "max_induction": {int(k): round(float(v), 4) for k, v in zip(steps, best["induction"], strict=True)},
    })
    first = next((int(k) for k, v in res["max_induction"].items() if v >= INDUCTION_HEAD), None)
    res["first_induction_head_step"] = first
    return res


# -- figures and summary --------------------------------------------------------------------------
def figures(log: pd.DataFrame, by_position: pd.DataFrame, timeline, res: dict, s: Settings):
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    table_ = timeline.df
    band = f"tokens {s.late[0]}-{s.late[1] - 1} minus {s.early[0]}-{s.early[1] - 1}"
    fig = make_subplots(rows=3, cols=1, shared_xaxes=True, vertical_spacing=0.06,
                        subplot_titles=("Induction and previous-token scores (repeated random tokens)",
                                        f"In-context loss ({band}), held out", "Loss"))
    palette = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728"]
    for score, dash in (("induction", "solid"), ("prev_token", "dot")):
        for i, (layer, head) in enumerate(timeline.top_heads(score, 3)):
            one = timeline.head(score, layer, head)
            fig.add_trace(go.Scatter(x=one["step"], y=one["value"], mode="lines+markers", marker={"size": 4},
                                     name=f"{score} {head_label(layer, head)}", line={"color": palette[i], "dash": dash}),
                          row=1, col=1)
        best = table_[table_["score"] == score].groupby("step")["value"].max()
        fig.add_trace(go.Scatter(x=best.index, y=best.values, mode="lines", name=f"{score}: max over heads",
                                 line={"color": "#000000", "dash": dash, "width": 1}), row=1, col=1)
    for name, color in (("text", "#9467bd"), ("recur", "#8c564b")):
        fig.add_trace(go.Scatter(x=log["step"], y=log[f"in_context_loss_{name}"], mode="lines+markers",
                                 marker={"size": 4}, name=f"in-context loss: {SETS[name]}", line={"color": color}),
                      row=2, col=1)
    fig.add_hline(y=0, line={"color": "#999", "width": 1}, row=2, col=1)  # type: ignore[arg-type]
    for name, color in (("train_loss", "#7f7f7f"), ("text_loss", "#17becf"), ("recur_loss", "#bcbd22")):
        label = {"train_loss": "training loss", "text_loss": "held-out loss", "recur_loss": "held-out loss, recurrence"}
        fig.add_trace(go.Scatter(x=log["step"], y=log[name], mode="lines", name=label[name], line={"color": color}),
                      row=3, col=1)
    for key, color in (("induction", "rgba(31,119,180,0.12)"), ("in_context_loss_recur", "rgba(140,86,75,0.12)"),
                       ("in_context_loss_text", "rgba(148,103,189,0.12)")):
        t = res[key]
        if t["t10"] is not None and t["t90"] is not None:
            for row in (1, 2, 3):
                fig.add_vrect(x0=t["t10"], x1=t["t90"], fillcolor=color, line_width=0, row=row, col=1)  # type: ignore[arg-type]
    fig.update_xaxes(title_text="training step", row=3, col=1)
    fig.update_yaxes(title_text="score", range=[0, 1.02], row=1, col=1)
    fig.update_yaxes(title_text="nats", row=2, col=1)
    fig.update_yaxes(title_text="nats/token", row=3, col=1)
    fig.update_layout(title="Induction heads as they form: scores and in-context loss against step (shaded: each "
                            "series' 10%→90% window; blue induction, brown and purple in-context losses)",
                      height=950, width=1150)
    steps = log["step"].tolist()
    t = res["induction"]
    picks = sorted({steps[1], *(x for x in (t["t10"], t["t50"], t["t90"]) if x is not None), steps[-1]})
    pos = make_subplots(rows=1, cols=2, shared_yaxes=True, subplot_titles=[SETS[n] for n in SETS])
    shades = ["#c6dbef", "#6baed6", "#2171b5", "#08306b", "#000000"]
    for col, name in enumerate(SETS, start=1):
        for i, step in enumerate(picks):
            curve = by_position[(by_position["step"] == step) & (by_position["set"] == name)].sort_values("position")
            smooth = np.convolve(curve["loss"].to_numpy(), np.ones(8) / 8, mode="valid")
            pos.add_trace(go.Scatter(x=np.arange(4, 4 + len(smooth)), y=smooth, mode="lines", name=f"step {step}",
                                     legendgroup=str(step), showlegend=col == 1,
                                     line={"color": shades[min(i, len(shades) - 1)]}), row=1, col=col)
        pos.update_xaxes(title_text="token position in the context", row=1, col=col)
    pos.update_yaxes(title_text="loss (nats)", row=1, col=1)
    pos.update_layout(title="Held-out loss by token position at chosen steps (8-token running mean; with a recurrence, "
                            f"characters {s.eval_repeat[0]}-{s.eval_repeat[0] + s.eval_repeat[2] - 1} stand again at "
                            f"{s.eval_repeat[1]}-{s.eval_repeat[1] + s.eval_repeat[2] - 1})", height=450, width=1150)
    return {"emergence": fig, "loss_by_position": pos}


def heads(rows: list[dict]) -> str:
    return ", ".join(f"{head_label(r['layer'], r['head'])} ({r['value']:.2f})" for r in rows)


def window(t: dict, n: int) -> str:
    if t["t10"] is None or t["t90"] is None:
        return "none (no change beyond noise)"
    return (f"steps {t['t10']}→{t['t90']} ({t['width']} steps, {t['width'] / n:.0%} of training; midpoint "
            f"{t['t50']}, steepest between checkpoints at {t['steepest']})")


def markdown(res: dict, check: dict, s: Settings, seconds: dict, command: str, written: list[str]) -> str:
    ind, prev = res["induction"], res["prev_token"]
    n = res["steps"]
    lo, hi = s.recur_len
    src, dst, rep = s.eval_repeat
    lines = ["# Induction heads as they form: induction score and in-context loss against training step", "",
             f"Produced by `{command}`: {fmt(seconds['total'] / 60, 1)} min on 2 shared CPU cores (training and "
             f"held-out losses {fmt(seconds['train'] / 60, 1)}, scanning {res['checkpoints']} checkpoints with "
             f"`interp heads` {fmt(seconds['scan'] / 60, 1)}, causal check {fmt(seconds['check'] / 60, 1)}; torch "
             "threads: 1).", "",
             f"Model: attention-only Llama (Hugging Face `LlamaConfig`, MLP width {s.d_mlp}), {s.layers} layers x "
             f"{s.heads} heads of {s.head_dim} dimensions, d_model {s.d_model}, rotary positions, byte vocabulary (the "
             f"69 characters of the text + BOS), context {s.ctx} + BOS. Data: Alice's Adventures in Wonderland (shipped "
             f"with interp), first 90% for training, last 10% held out. **Training windows are not plain text:** in "
             + ("every one" if s.recur >= 1 else f"{s.recur:.0%}") + f" of them {s.recur_count} passage(s) of {lo}-{hi} characters recur later in the same window "
             f"(each copied from a random place to a random later place, over what stood there), as names and phrases "
             f"recur in longer texts. AdamW lr {s.lr} ({s.warmup} warm-up "
             f"steps), weight decay {s.weight_decay}, batch {s.batch} windows, {s.steps} steps "
             f"({s.steps * s.batch * s.ctx / 1e6:.1f}M tokens, {res['epochs']:.0f} passes over the training text), "
             f"seed {s.seed}; checkpoint every {s.save_every} steps. Head scores: `interp heads` on repeated random "
             f"tokens (lengths {s.scan_lengths}, {s.scan_samples} sequences each). In-context loss: loss at tokens "
             f"{s.late[0]}-{s.late[1] - 1} minus tokens {s.early[0]}-{s.early[1] - 1}, on {s.eval_windows} held-out "
             f"windows starting every {s.eval_stride} characters (both bands see the same text), plain ('held-out "
             f"text') and with characters {src}-{src + rep - 1} repeated at {dst}-{dst + rep - 1} ('with a "
             "recurrence': the late band lies in the repeat).", "",
             "## What changed, and when", ""]
    rows = [["induction score (max over heads)", fmt(ind["start"]), fmt(ind["end"]),
             f"{fmt(ind['peak'])} ({ind['peak_step']})", window(ind, n)],
            ["previous-token score (max over heads)", fmt(prev["start"]), fmt(prev["end"]),
             f"{fmt(prev['peak'])} ({prev['peak_step']})", window(prev, n)]]
    for name in SETS:
        t = res[f"in_context_loss_{name}"]
        rows.append([f"in-context loss, {SETS[name]} (nats)", fmt(t["start"]), fmt(t["end"]),
                     f"lowest {fmt(t['low'])} ({t['low_step']})", window(t, n)])
    lines += table(["series", "at the first checkpoint", "at the end", "largest (step)", "10%→90% window"], rows)
    fit = res["fit"]
    lines += ["", f"Top heads at step {n}: induction {heads(res['top_heads']['induction'])}; previous-token "
              f"{heads(res['top_heads']['prev_token'])}. Held-out loss (plain text): lowest {fmt(fit['heldout_lowest'])} "
              f"at step {fit['heldout_lowest_step']}, {fmt(fit['heldout_final'])} at the end (training loss "
              f"{fmt(fit['train_final'])}, on windows with recurrences).", ""]
    if check:
        rnd = check.get("random_ablated_loss", {})
        lines += [f"Causal check at step {n}: mean-ablating the top {check.get('k')} induction heads "
                  f"({', '.join(check.get('top_heads', []))}) raises the loss on the second copy of repeated random "
                  f"tokens from {fmt(check.get('clean_loss'), 2)} to {fmt(check.get('top_ablated_loss'), 2)}; "
                  f"{len(rnd)} sets of as many random heads: {', '.join(fmt(v, 2) for v in rnd.values())}.", ""]
    lines += ["## Against the paper", "", *reading(res, s), "", "## How these settings were chosen", "",
              *(f"- {h}" for h in HISTORY), "",
              files_line(["summary.md", "summary.json", "training.parquet", "loss_by_position.parquet",
                          "timeline.parquet", *written],
                         "`emergence.html`: the scores, the in-context losses and the losses against step, with each "
                         "series' window shaded; `loss_by_position.html`: held-out loss by token position before, "
                         "during and after the change, on both held-out sets.")]
    return "\n".join(lines) + "\n"


def together(ind: dict, icl: dict, ov: dict | None, s: Settings, n: int) -> tuple[bool, bool]:
    """(whether the two change together: their windows overlap and their midpoints are at most two
    checkpoints apart; whether both windows are narrow: at most ``NARROW`` of training)."""
    if ov is None or ind["width"] is None or icl["width"] is None:
        return False, False
    same = ov["steps"] > 0 and abs(ind["t50"] - icl["t50"]) <= 2 * s.save_every
    return same, max(ind["width"], icl["width"]) <= NARROW * n


# The first version of this study and the runs that chose the present settings (numbers from their
# logs; this command does not rerun them).
HISTORY = [
    "A first version (2 layers x 4 heads with MLPs of 256, plain 256-character windows, 3000 steps, 47 passes over "
    "the text) formed no induction head: the best induction score over 31 checkpoints was 0.027, and the held-out "
    "loss rose after step 1000 while the training loss kept falling (the text is learned in the weights). Its "
    "in-context loss of +0.24 nats was an artefact of the measure: 64 random held-out windows compare different "
    "text at the early and the late tokens; on windows every 20 characters (both bands the same text) the same "
    "checkpoints give -0.03 nats. The present measure is aligned that way.",
    "Attention-only models of 2 layers (8 heads of 16 or 4 of 32; 1000-1500 steps; windows of 128 or 256 "
    "characters) formed no induction head with one recurring passage in half or all of the windows (best score at "
    "most 0.07 in 8 runs); with three recurring passages per window one reached 0.10. In all of them the "
    "previous-token heads formed in the second layer, where a K-composing induction head cannot use them; with a "
    "third layer they form in layer 1 and the induction heads in layer 2. A recurrence at a fixed distance (the "
    "second half of a window repeating the first) taught a positional copy instead: in two such runs the held-out "
    "loss fell on repeats at that distance (64) and rose on repeats at another (48), and the induction score stayed "
    "at 0.04 or below; so the passages recur at random distances here.",
]


def reading(res: dict, s: Settings) -> list[str]:
    ind, prev = res["induction"], res["prev_token"]
    n, tokens = res["steps"], res["tokens"]
    out = []
    above = res["heads_above"].get(n, 0)
    if res["formed"]:
        out.append(f"- Paper: small models form induction heads (prefix-matching score on repeated random tokens; heads "
                   f"above ~{INDUCTION_HEAD} are called induction heads). Here: the best head goes from "
                   f"{fmt(ind['start'])} to {fmt(ind['end'])} (largest {fmt(ind['peak'])} at step {ind['peak_step']}); "
                   f"the first checkpoint with a head above {INDUCTION_HEAD} is step {res['first_induction_head_step']}, "
                   f"and {above} of the {s.layers * s.heads} heads {'is' if above == 1 else 'are'} above it at the end. "
                   "Agrees, with training windows in which passages recur.")
    else:
        out.append(f"- Paper: small models form induction heads (prefix-matching score on repeated random tokens; heads "
                   f"above ~{INDUCTION_HEAD} are called induction heads). Here: none does: the best induction score "
                   f"over all {res['checkpoints']} checkpoints is {fmt(ind['peak'])} (step {ind['peak_step']}), in "
                   f"{tokens / 1e6:.1f}M training tokens. Disagrees at this scale.")
    if prev["width"] is not None:
        out.append(f"- Paper: previous-token heads (the partner of induction heads in K-composition) form with or "
                   f"before them. Here: the best previous-token score goes from {fmt(prev['start'])} to "
                   f"{fmt(prev['end'])} in steps {prev['t10']}→{prev['t90']} (midpoint {prev['t50']})"
                   + (f", against {ind['t10']}→{ind['t90']} (midpoint {ind['t50']}) for the induction score"
                      + (": before it. Agrees." if prev["t50"] <= ind["t50"] else ": after it. Disagrees.")
                      if ind["width"] is not None else "; the induction head does not follow."))
    for name in SETS:
        icl = res[f"in_context_loss_{name}"]
        fell, rose = icl["change"] < -NOISE["loss"], icl["change"] > NOISE["loss"]
        out.append(f"- Paper: the in-context loss (late minus early tokens) falls in the phase change, by roughly 0.4 "
                   f"nats in their models (read from their figures; token 500 minus token 50 of natural text). Here, "
                   f"{SETS[name]} (tokens {s.late[0]}-{s.late[1] - 1} minus {s.early[0]}-{s.early[1] - 1} of {s.ctx} "
                   f"characters): from {fmt(icl['start'])} to {fmt(icl['end'])} nats. "
                   + (f"It falls by {fmt(-icl['change'])}. Agrees." if fell else
                      f"It rises by {fmt(icl['change'])}: late tokens are predicted worse than early ones, the model "
                      "copying where nothing recurs (training windows hold recurrences that this text does not). "
                      "Disagrees." if rose else "No change beyond noise. Disagrees."))
        ov = res[f"overlap_{name}"]
        if not fell:
            continue
        same, narrow = together(ind, icl, ov, s, n)
        if ov is None:
            out.append(f"- Paper: the induction score and the in-context loss change together in one narrow window. "
                       f"Here, {SETS[name]}: the induction score does not change beyond noise, so there is no shared "
                       "window. Disagrees.")
            continue
        lead = ind["t50"] - icl["t50"]
        out.append(f"- Paper: the induction score and the in-context loss change together in one narrow window (the "
                   f"phase change). Here, {SETS[name]}: the in-context loss makes its change in steps "
                   f"{icl['t10']}→{icl['t90']}, the induction score in {ind['t10']}→{ind['t90']}; the windows overlap "
                   f"for {ov['steps']} of the {ov['union']} steps they span, midpoints {icl['t50']} and {ind['t50']} "
                   + (f"(the loss leads by {lead} steps)" if lead > 0 else f"(the score leads by {-lead} steps)"
                      if lead < 0 else "(the same)")
                   + f". Each window is {icl['width'] / n:.0%} and {ind['width'] / n:.0%} of training (a factor of "
                   f"{icl['t90'] / max(icl['t10'], 1):.1f} and {ind['t90'] / max(ind['t10'], 1):.1f} in steps, on "
                   "the logarithmic axis the paper plots training on). "
                   + ("They change together in one narrow window. Agrees." if same and narrow else
                      "They change together, but over a wide part of training. Partly agrees." if same else
                      "They change in overlapping windows, the loss first: the text's recurrences are copied before a "
                      "head attends cleanly to the token after a repeated random token. Partly agrees." if ov["steps"]
                      else "They do not change together. Disagrees."))
    return out


def main(argv: list[str] | None = None) -> None:
    parser = arguments(__doc__, OUT)
    parser.add_argument("--steps", type=int, default=Settings.steps)
    parser.add_argument("--save-every", type=int, default=Settings.save_every)
    parser.add_argument("--recur", type=float, default=Settings.recur,
                        help="share of training windows in which a passage recurs (0: plain text)")
    parser.add_argument("--seed", type=int, default=Settings.seed)
    parser.add_argument("--work", type=Path, default=WORK, help="checkpoints and per-checkpoint reports")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    with output_folder(args.out, kind=KIND) as out:  # checked and locked before any training
        if args.render:
            return render(out)
        train_and_write(args, out)


def train_and_write(args, out: OutputFolder) -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # no bar per saved checkpoint
    s = Settings(steps=args.steps, save_every=args.save_every, recur=args.recur, seed=args.seed)
    command = "python case_studies/induction_emergence.py"
    if args.smoke:
        s = dataclasses.replace(s, steps=20, save_every=10, ctx=64, batch=2, early=(8, 16), late=(48, 56),
                                eval_stride=8, eval_windows=4, eval_repeat=(16, 40, 16), recur_len=(4, 16),
                                scan_lengths="8", scan_samples=2, layers=2, d_model=32, heads=4, head_dim=16)
        command += " --smoke"
        if args.work == WORK:
            args.work = args.out / "work"
    elif args.recur != Settings.recur:
        command += f" --recur {args.recur}"
    watch = Stopwatch()
    with watch.part("train"):
        log, by_position = train(s, args.work)
    with watch.part("scan"):
        timeline = scan(s, args.work)
    with watch.part("check"):
        check = causal_check(s, args.work / "checkpoints" / f"checkpoint-{s.steps}")
    write_tables(out, {"training.parquet": log, "timeline.parquet": timeline.df,
                       "loss_by_position.parquet": by_position})
    meta = {"command": command, "settings": dataclasses.asdict(s), "seconds": watch.done(), "causal_check": check}
    write_report(out, log, by_position, timeline, s, meta)


def write_report(out: OutputFolder, log: pd.DataFrame, by_position: pd.DataFrame, timeline, s: Settings,
                 meta: dict) -> None:
    res = analyse(log, timeline.df, s)
    written = write_figures(figures(log, by_position, timeline, res, s), out)
    write_json(out, "summary.json", {**meta, "result": res}, end="", default=str)
    text = markdown(res, meta["causal_check"], s, meta["seconds"], meta["command"], written)
    out.write_text("summary.md", text)
    print(text)


def render(out: OutputFolder) -> None:
    """The summary and figures again from a finished run's files (no training, no scan)."""
    from interp.heads.timeline import Timeline, default_figure_scores

    out.keep("training.parquet", "timeline.parquet", "loss_by_position.parquet")
    meta = json.loads((out.path / "summary.json").read_text())
    meta.pop("result", None)
    s = Settings(**{k: tuple(v) if isinstance(v, list) else v for k, v in meta["settings"].items()})
    table_ = pd.read_parquet(out.path / "timeline.parquet")
    timeline = Timeline(df=table_, checkpoints=[{"step": int(x), "folder": f"checkpoint-{int(x)}", "model": ""}
                                                for x in sorted(set(table_["step"]))],
                        figure_scores=default_figure_scores(list(dict.fromkeys(table_["score"]))), settings={})
    write_report(out, pd.read_parquet(out.path / "training.parquet"),
                 pd.read_parquet(out.path / "loss_by_position.parquet"), timeline, s, meta)


if __name__ == "__main__":
    main()
