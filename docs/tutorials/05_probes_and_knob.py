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
# # 5. Probes, directions and the context knob
#
# What you learn: `interp.probes.collect` keeps one position of chosen sites for many prompts;
# `probe_by_site` fits a held-out linear probe per layer; a difference-of-means direction and a
# rank-1 DAS direction (trained with interchange interventions); `steer` sets a projection while
# generating; and `interp.probes.knob`, the context-vs-prior analysis of Minder et al.
#
# **Settings.** CI: 48 labelled sentences, 20 DAS steps, and the knob read from the shipped
# case-study result. Full run: `FULL = True` (twice the sentences, 200 DAS steps, and the knob
# run here on its 200 items, about 10 minutes on 2 cores).

# %%
MODEL = "smollm2-135m"
FULL = False  # full run: True

# %%
import numpy as np
import torch

import interp
from interp import probes

model = interp.load(MODEL)
animals = ["dog", "cat", "horse", "cow", "sheep", "goat"]
objects = ["table", "chair", "lamp", "spoon", "box", "door"]
templates = ["I saw a {} yesterday.", "There is a {} here.", "Look at the {}!", "She painted the {}."]
if FULL:
    templates += ["My neighbour has a {}.", "We talked about the {}.", "A {} was in the garden.", "He drew a {}."]
texts = [t.format(w) for t in templates for w in animals + objects]
labels = [int(w in animals) for t in templates for w in animals + objects]
acts = probes.collect(model, texts, labels, sites="blocks.*.hook_resid_post", position="last", progress=False)
print(len(texts), "texts;", len(acts.sites), "sites")

# %% [markdown]
# ## A probe per layer: where is "animal" linearly readable?
#
# The last token is the period or `!`, so the label has to be carried there.

# %%
by_layer = probes.probe_by_site(acts)
print(by_layer[["site", "score", "ci_low", "ci_high"]].round(2).iloc[::5].to_string(index=False))
probes.concept_depth_figure(by_layer, title="animal vs object, last token").show()

# %% [markdown]
# ## Directions: difference of means, and rank-1 DAS

# %%
layer = 12
site = f"blocks.{layer}.hook_resid_post"
X, y = np.asarray(acts.X[site]), np.array(labels)
u_mean = probes.diff_of_means(X, y)
proj = X @ u_mean
print(f"projection on the diff-of-means direction: animals {proj[y == 1].mean():.2f}, objects {proj[y == 0].mean():.2f}")

# Rank-1 DAS: a unit direction such that swapping the projection from a source example into a
# base example moves the base towards the source's class (here measured on the probe's logit).
Xt, yt = torch.tensor(X, dtype=torch.float64), torch.tensor(y, dtype=torch.float64)  # DAS trains in float64
w = torch.tensor(u_mean / np.linalg.norm(u_mean), dtype=torch.float64)
rng = np.random.default_rng(0)
pairs = torch.tensor(rng.integers(0, len(Xt), size=(64, 2)))

def das_loss(u):
    base, source = Xt[pairs[:, 0]], Xt[pairs[:, 1]]
    swapped = probes.interchange(base, source, u)
    return torch.nn.functional.binary_cross_entropy_with_logits((swapped - Xt.mean(0)) @ w * 4, yt[pairs[:, 1]])

u_das = probes.fit_rank1_das(das_loss, X.shape[1], steps=200 if FULL else 20, seed=0)
print(f"DAS loss {float(das_loss(u_das)):.3f}; cosine with diff-of-means {float(u_das @ w):.2f}")

# %% [markdown]
# ## Steering: set the projection while generating

# %%
prompt = "Here is a short story about a"
print("plain:    ", model.generate(prompt, max_new_tokens=6))
push = {site: probes.steer(u_mean, add=3 * float(np.std(proj)))}
print("+animal:  ", model.generate(prompt, max_new_tokens=6, interventions=push))

# %% [markdown]
# ## The context knob
#
# Counterfactual items ("Moscow is in Poland.") asked with "Ignore the context" or "Only consider
# the context": where the intent is carried, a rank-1 direction at that layer, and how often
# setting its projection flips the answer, against random directions. A run takes several
# minutes even on a few items, so at CI size we read the result the context-knob case study
# computed with this same function on all 200 items (it ships with interp); `FULL = True`
# runs it here.

# %%
from importlib import resources
from pathlib import Path

from interp.probes import KnobResult

if FULL:
    knob = probes.knob(model, n_items=200, progress=False)
else:
    knob = KnobResult.load(Path(str(resources.files("interp") / "data" / "case_studies" / "knob" / MODEL)))
summary = knob.to_dict()
print({k: summary[k] for k in ("accuracy", "layers", "layer", "flip_rate", "random_flip_rate")})
figures = knob.figures()
print("figures:", list(figures))
figures[list(figures)[-1]].show()
