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
# # 6. Circuits: patching, attribution, knockout, the ICL circuit
#
# What you learn: `activation_patching` restores clean activations into a corrupted run per
# layer, head and position; `attribution_patching` estimates the same effects for every head from
# one backward pass (and `check_against_patching` compares a sample with real patching);
# `knockout` removes chosen query→key edges through the attention mask; `icl_circuit` measures
# the in-context-learning circuit of Cho et al.
#
# **Settings.** CI patches the heads of layers 16-29 and measures the ICL circuit's accuracy and
# steps 2-3 on one dataset with 4 queries and 2 demonstrations (no sentence encoder for step 1,
# no knockouts or patching inside it: those are shown on their own above). Full run:
# `FULL = True` (every layer; both datasets, 32 queries, 4 demonstrations, all steps, knockouts
# and patching; about 10 minutes on 2 quiet cores).

# %%
MODEL = "smollm2-135m"
FULL = False  # full run: True

# %%
import interp
from interp import circuits

model = interp.load(MODEL)
clean = "The Eiffel Tower is in the city of"
corrupted = "The Colosseum is in the city of"
assert len(model.to_tokens(clean)["input_ids"][0]) == len(model.to_tokens(corrupted)["input_ids"][0])
metric = circuits.logit_diff(" Paris", " Rome", model=model)
for name, prompt in (("clean", clean), ("corrupted", corrupted)):
    print(f"{name}: logit(' Paris') - logit(' Rome') = {float(metric(model.run(prompt))[0]):.2f}")

# %% [markdown]
# ## Activation patching: which heads carry "Paris"?

# %%
layers = None if FULL else list(range(16, 30))
patched = circuits.activation_patching(model, clean, corrupted, metric, sites="z", layers=layers, progress=False)
top = patched.df.reindex(patched.df["effect"].abs().sort_values(ascending=False).index).head(5)
print(top.to_string(index=False))
patched.heatmap().show()

# %% [markdown]
# ## Attribution patching: every head from one backward pass

# %%
attribution = circuits.attribution_patching(model, clean, corrupted, metric, sites="blocks.*.attn.hook_z")
by_size = attribution.df.reindex(attribution.df["effect"].abs().sort_values(ascending=False).index)
print(by_size.head(5).to_string(index=False))
comparison = circuits.check_against_patching(model, clean, corrupted, metric, attribution, n=6 if not FULL else 20)
print(comparison.round(3).to_string(index=False))

# %% [markdown]
# ## Knockout: cut the last token off the subject
#
# Block the edges from the last position to the subject tokens (positions 1-4) in every layer
# from 10 on, and see the answer go.

# %%
n = len(model.to_tokens(clean)["input_ids"][0])
blocked = circuits.edges_mask([[(-1, k) for k in range(1, 5)]], n)
with circuits.knockout(model, blocked, layers=range(10, model.cfg.n_layers)):
    knocked = model.run(clean)
print(f"logit diff with the edges knocked out: {float(metric(knocked)[0]):.2f}")

# %% [markdown]
# ## The ICL circuit
#
# Few-shot prompts of a shipped sentiment dataset: accuracy by the number of demonstrations; the
# three steps of Cho et al. by layer (summarize, semantics merge, feature retrieval and copy);
# in the full run, knockouts of each step's edges against random edges.

# %%
settings = {} if FULL else dict(datasets=["sentiment"], ks=(0, 2), k=2, n_queries=4, neighbors=1,
                                 summarize=False, ablation=False, patching_pairs=0)
icl = circuits.icl_circuit(model, progress=False, **settings)
print(icl["accuracy"].to_string(index=False))
print(icl["retrieval"].round(3).head(8).to_string(index=False))  # step 3 by layer
figures = icl.figures()
print("figures:", list(figures))
next(iter(figures.values())).show()
