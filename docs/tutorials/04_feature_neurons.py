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
# # 4. Feature neurons through the LM head
#
# What you learn: `interp.neurons.decode` reads every MLP neuron's weight vector through the
# unembedding (scaled by the norm gains) and keeps its top tokens; `find` ranks neurons by how
# strongly they decode to a concept; `activation_evidence` checks whether a neuron actually fires
# on prompts about the concept more than on matched controls; `clamp_effect` holds a neuron at a
# value while generating.
#
# **Settings.** CI decodes the last 4 layers (6,144 neurons). Full run: `LAYERS = None` (all 30
# layers, 46,080 neurons; about 25 s on 2 quiet cores).

# %%
MODEL = "smollm2-135m"
LAYERS = [26, 27, 28, 29]  # full run: None

# %%
import plotly.express as px

import interp
from interp import neurons

model = interp.load(MODEL)
# "gate" rows name concepts more often than "up" rows in this small model (the feature-neuron case study)
table = neurons.decode(model, weights="gate", k=10, layers=LAYERS, progress=False)
print(table.groupby(["layer", "neuron"]).ngroups, "neurons decoded,", len(table), "rows (top 10 tokens each)")
table.head(3)

# %% [markdown]
# ## `find`: neurons that decode to a concept

# %%
# "dog" and " dog" are one token each (a word split into several tokens is scored by its first, with a warning)
hits = neurons.find(model, "dog", weights="gate", layers=LAYERS, top=5, progress=False)
print(hits.to_string(index=False, max_colwidth=60))
layer, neuron = int(hits.iloc[0]["layer"]), int(hits.iloc[0]["neuron"])

# %% [markdown]
# ## Evidence: does it fire on the concept?
#
# The shipped concept sets pair each prompt with a control that swaps the concept out
# (`dog` → `goose`, `horse`, ...); Cohen's d above 0.8 is a large effect.

# %%
concept = neurons.concept_set("dog")
ev = neurons.activation_evidence(model, layer, neuron, concept["prompts"], concept["controls"])
print(f"L{layer}N{neuron}: concept mean {ev.concept_mean:.2f}, control mean {ev.control_mean:.2f}, d = {ev.cohens_d:.2f}")
fig = px.strip(x=["concept"] * len(ev.concept_values) + ["control"] * len(ev.control_values),
               y=list(ev.concept_values) + list(ev.control_values), labels={"x": "", "y": "activation (max over tokens)"},
               title=f"L{layer}N{neuron} on concept and control prompts")
fig.show()

# %% [markdown]
# ## Clamping
#
# The down column decides which way a clamp pushes the concept (a last-layer neuron that reads a
# concept often writes against it), so we try both signs.

# %%
for value in (-20.0, 20.0):
    r = neurons.clamp_effect(model, layer, neuron, value, "I looked out of the window and saw a", "dog",
                             max_new_tokens=6)
    print(f"clamp {value:+}: p(dog) {r.p_base:.2e} -> {r.p_clamped:.2e};  text: {r.text_clamped!r}")
