# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 2. Attention heads: scan, rank, check, report, compare
#
# What you learn: `interp.heads.scan` scores every attention head (previous-token, duplicate,
# induction, ...) from kernel statistics, without eager attention or stored patterns; `top` and
# `heatmap` read the result; the causal check ablates the top induction heads against random
# ones; `save` writes `head_scores.parquet` and a self-contained `report.html`; and two models'
# scans compare head for head.
#
# **Settings.** CI runs a tiny scan (one length of 25 repeated tokens, 2 sequences, 128 tokens of
# text). The full scan: set `SETTINGS = {}` (the defaults: 3 lengths, 8 sequences, 512 text
# tokens; a few minutes on 2 cores).

# %%
MODEL = "smollm2-135m"
SETTINGS = dict(lengths=(25,), samples=2, text_tokens=128, text_samples=1)  # full run: SETTINGS = {}

# %%
import tempfile
from importlib import resources
from pathlib import Path

import pandas as pd

import interp
from interp.heads import HeadScores

model = interp.load(MODEL)
scores = interp.heads.scan(model, ["prev_token", "duplicate", "induction", "prev_token_text"],
                           progress=False, **SETTINGS)
print(scores.df.shape[0], "rows:", scores.scores)
scores.df.head()

# %% [markdown]
# ## The top heads, and where they sit

# %%
print(scores.top("induction", 5).to_string(index=False))
print(scores.top("prev_token", 5).to_string(index=False))
scores.heatmap("induction").show()

# %% [markdown]
# ## The causal check
#
# A high induction score is a pattern, not yet a function. The scan mean-ablates the top
# induction heads and as many random heads (several seeds), and measures the loss on the second
# copy of a repeated random sequence: the top heads should hurt more.

# %%
check = scores.checks["induction_ablation"]
print({k: v for k, v in check.items() if not isinstance(v, (list, dict))})

# %% [markdown]
# ## The report, and `head_scores.parquet`
#
# `save` writes the tables and an HTML report into an output folder (interp never overwrites a
# file it did not write). The parquet table is tidy: one row per score, layer and head.

# %%
out = Path(tempfile.mkdtemp()) / "smollm2"
scores.save(out)
print(sorted(p.name for p in out.iterdir() if not p.name.startswith(".")))
table = pd.read_parquet(out / "head_scores.parquet")
print(table.pivot_table(index="score", values="value", aggfunc=["mean", "max"]).round(3))
again = HeadScores.load(out)
assert again.to_dict() == scores.to_dict()  # the files hold the whole result

# %% [markdown]
# ## Comparing two models
#
# The repository ships the full scans of both bundled models (the head-scan case study) as
# package data, so a comparison needs no second model in memory. First, how our tiny scan
# agrees with the full one for SmolLM2; then SmolLM2 against Gemma-3-270M.

# %%
shipped = Path(str(resources.files("interp") / "data" / "case_studies" / "head_scans"))
full = {name: HeadScores.load(shipped / name) for name in ("smollm2-135m", "gemma3-270m")}
mine = scores.wide()["induction"].rename("tiny scan")
theirs = full["smollm2-135m"].wide()["induction"].rename("full scan")
both = pd.concat([mine, theirs], axis=1)
print(f"induction, tiny vs full scan of SmolLM2: Spearman {both.corr(method='spearman').iloc[0, 1]:.2f}")

rows = []
for name, s in full.items():
    w = s.wide()
    rows.append({"model": name, "layers x heads": f"{s.n_layers} x {s.n_heads}",
                 "induction > 0.4": int((w["induction"] > 0.4).sum()),
                 "prev_token > 0.4": int((w["prev_token"] > 0.4).sum()),
                 "best induction head": "L{}H{}".format(*w["induction"].idxmax()),
                 "best value": round(float(w["induction"].max()), 3)})
print(pd.DataFrame(rows).to_string(index=False))
full["gemma3-270m"].heatmap("induction").show()
