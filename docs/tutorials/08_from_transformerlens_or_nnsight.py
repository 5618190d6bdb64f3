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
# # 8. Coming from TransformerLens or nnsight
#
# What you learn: interp speaks TransformerLens's site names (`act_name`, short names such as
# `"z"`, `run_with_cache` returning `(logits, cache)`), and `model.to_nnsight()` hands the same
# modules to nnsight. We do one analysis (direct logit attribution of each head's output at the
# last token) three ways and check that they agree.
#
# **Settings.** SmolLM2 on one prompt: the CI run is the full run. The nnsight part runs where nnsight is
# installed (`pip install 'interp[nnsight]'`; the dev install has it). A model loaded by
# TransformerLens (`TransformerBridge`) or nnsight (`LanguageModel`) can also be passed to
# `interp.load`; that needs `interp[bench]` and is shown, not run.

# %%
import importlib.util

import plotly.express as px
import torch

import interp

model = interp.load("smollm2-135m")
prompt = "When Mary and John went to the store, John gave a drink to"
answer = model.token_id(" Mary")
print(interp.act_name("z", 3), interp.act_name("resid_post", 29), interp.act_name("result", 3))

# %% [markdown]
# ## TransformerLens style: `run_with_cache` and `hook_result`
#
# `hook_result` holds each head's output in the residual basis `[batch, pos, heads, d_model]`.
# Projecting it (through the final norm's scale at the last position) onto the unembedding of
# " Mary" gives each head's direct contribution to that logit.

# %%
logits, cache = model.run_with_cache(prompt, names_filter=["result", "ln_final.hook_normalized", "blocks.29.hook_resid_post"])
final = cache["blocks.29.hook_resid_post"][0, -1]
scale = cache["ln_final.hook_normalized"][0, -1] / final  # the final norm, elementwise, at this token
w_u = model.hf.get_output_embeddings().weight[answer].detach()
dla = torch.stack([(cache["result", layer][0, -1] * scale) @ w_u for layer in range(model.cfg.n_layers)])
print("[layers, heads]", tuple(dla.shape))
best = torch.topk(dla.flatten(), 3)
for v, i in zip(best.values, best.indices, strict=True):
    print(f"L{int(i) // model.cfg.n_heads}H{int(i) % model.cfg.n_heads}: {float(v):+.2f}")
px.imshow(dla.numpy(), color_continuous_scale="RdBu", color_continuous_midpoint=0,
          labels={"x": "head", "y": "layer", "color": "DLA"}, title="direct logit attribution to ' Mary'").show()

# %% [markdown]
# ## interp style: one trace, sites as globs

# %%
with model.trace(prompt, sites=["blocks.*.attn.hook_result"], positions=[-1]) as tr:
    pass
same = torch.stack([(tr[f"blocks.{layer}.attn.hook_result"][0, -1] * scale) @ w_u for layer in range(model.cfg.n_layers)])
print("largest difference from the run_with_cache version:", float((same - dla).abs().max()))

# %% [markdown]
# ## nnsight style: `model.to_nnsight()`
#
# nnsight wraps the same Hugging Face modules (no copy); `blocks.{l}.hook_resid_post` is
# `model.model.layers[l].output`.

# %%
if importlib.util.find_spec("nnsight") is not None:
    lm = model.to_nnsight()
    with lm.trace(prompt):
        resid = lm.model.layers[29].output.save()
    resid = resid[0] if isinstance(resid, tuple) else resid
    print("nnsight's layer-29 output equals interp's hook_resid_post:",
          torch.allclose(resid[0, -1].float(), final.float(), atol=1e-4))
else:
    print("nnsight is not installed: pip install 'interp[nnsight]'")

# %% [markdown]
# ## Models from TransformerLens and nnsight, into interp
#
# ```python
# from nnsight import LanguageModel
# from transformer_lens.model_bridge import TransformerBridge
#
# model = interp.load(LanguageModel("path/to/a/local/hf/folder"))   # nnsight's own module
# model = interp.load(TransformerBridge.boot_transformers("path/to/a/local/hf/folder"))
# scores = interp.heads.scan(model, ["prev_token", "induction"])    # any interp analysis
# ```
