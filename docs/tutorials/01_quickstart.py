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
# # 1. Quickstart: load, trace, intervene, generate
#
# What you learn: how `interp` loads a model (bundled, a local Hugging Face folder, a GGUF file),
# how `model.trace` captures activations at TransformerLens-style **sites**, how to read one
# head's attention without eager attention, `run_with_cache`, and interventions during `generate`.
#
# **Settings.** This runs on SmolLM2-135M on 2 CPU cores in about a minute. The CI setting skips
# loading a GGUF file by its path (the bundled name already goes through SmolLM2's GGUF file; a
# new path is dequantised once, about a minute more): set `LOAD_GGUF = True` for the full run.
# To use another model, change `MODEL` (`"gemma3-270m"`, a local folder or a `.gguf` path).

# %%
MODEL = "smollm2-135m"
LOAD_GGUF = False  # full run: True

# %%
import tempfile
from pathlib import Path

import plotly.express as px
import torch

import interp

model = interp.load(MODEL)  # offline: converted from the bundled GGUF once, then cached
print(model.name, model.cfg)

# %% [markdown]
# ## Three ways to load
#
# `interp.load` takes a bundled name (above), a local Hugging Face folder, a `.gguf` file, or a
# model already in memory (`model=`, `tokenizer=`). Here we save a tiny random Llama into a
# temporary folder and load the folder, then load SmolLM2's own GGUF file by its path (it is
# dequantised once and kept in interp's verified cache, so this is quick after the first time).

# %%
from transformers import LlamaConfig, LlamaForCausalLM

folder = Path(tempfile.mkdtemp()) / "tiny-llama"
torch.manual_seed(0)
tiny_cfg = LlamaConfig(vocab_size=model.cfg.d_vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2)
LlamaForCausalLM(tiny_cfg).save_pretrained(folder)
model.tokenizer.save_pretrained(folder)
tiny = interp.load(str(folder))
print("local folder:", tiny.cfg)

from interp.models.bundled import find_bundled

if LOAD_GGUF:
    with find_bundled(MODEL).gguf_source().as_file(Path(tempfile.mkdtemp())) as gguf:
        from_gguf = interp.load(str(gguf))  # any .gguf path: Llama, Mistral, Qwen, Gemma 3, GPT-2, ...
    print("GGUF file:", Path(str(gguf)).name, from_gguf.cfg.n_layers, "layers")
    del from_gguf
del tiny

# %% [markdown]
# ## Sites and globs
#
# Every activation has a name: `blocks.{layer}.attn.hook_q`, `blocks.{layer}.hook_resid_post`,
# `blocks.{layer}.mlp.hook_post`, ... Globs select many (`blocks.*.attn.hook_z`), and
# TransformerLens short names work too (`"z"` is every layer's `hook_z`, `("z", 3)` one layer's).

# %%
print(len(model.site_names()), "sites, e.g.", model.site_names()[:6])
print([s.name for s in model.resolve("blocks.1[0-2].attn.hook_z")])
print(interp.act_name("resid_post", 3))

# %% [markdown]
# ## `trace`: capture what you name
#
# A trace runs the real Hugging Face module with hooks at the named sites and removes them when
# the block ends. Captured tensors are on the CPU, indexed by site name.

# %%
prompt = "The cat sat on the mat. The cat sat on the"
with model.trace(prompt, sites=["blocks.*.hook_resid_post", "blocks.18.attn.hook_[qk]"]) as tr:
    pass
resid = torch.stack([tr[f"blocks.{layer}.hook_resid_post"][0, -1] for layer in range(model.cfg.n_layers)])
print("residual stream at the last token, norm by layer:", [round(float(x), 1) for x in resid.norm(dim=-1)[::5]])
print("q shape", tuple(tr["blocks.18.attn.hook_q"].shape), "k shape", tuple(tr["blocks.18.attn.hook_k"].shape))

# %% [markdown]
# ## One head's attention, from captured queries and keys
#
# `attention_pattern` recomputes attention probabilities only for the heads and rows asked for,
# with the mask the layer used; the model itself stayed on SDPA.

# %%
tokens = [f"{i}:{model.tokenizer.decode(t)}" for i, t in enumerate(model.to_tokens(prompt)["input_ids"][0])]
pattern = interp.attention_pattern(tr, layer=18, heads=[6])[0, 0]  # [query, key]
fig = px.imshow(pattern.numpy(), x=tokens, y=tokens, color_continuous_scale="Blues",
                labels={"x": "key", "y": "query", "color": "p"}, title="L18H6 attention")
fig.show()
last = pattern[-1]
print("from the last token, L18H6 looks most at", repr(tokens[int(last.argmax())]), f"(p = {float(last.max()):.2f})")

# %% [markdown]
# ## `run_with_cache`, as in TransformerLens

# %%
logits, cache = model.run_with_cache(prompt, names_filter="z")
print(tuple(logits.shape), interp.act_name("z", 3), tuple(cache["z", 3].shape))  # [batch, pos, heads, d_head]
next_token = model.tokenizer.decode(int(logits[0, -1].argmax()))
print("next token:", repr(next_token))

# %% [markdown]
# ## Interventions, also while generating
#
# Interventions are keyed by site; `interp.interventions` has `zero`, `set`, `add`, `scale`,
# mean-ablation and patching, per head, neuron and position.

# %%
print("plain:   ", model.generate(prompt, max_new_tokens=3))
ablate = {f"blocks.{layer}.attn.hook_z": interp.interventions.zero(heads=list(range(model.cfg.n_heads)))
          for layer in range(14, 22)}
print("ablated: ", model.generate(prompt, max_new_tokens=3, interventions=ablate))
target = model.token_id(" mat")
for name, iv in [("plain", None), ("attention of layers 14-21 zeroed", ablate)]:
    p = torch.softmax(model.run(prompt, interventions=iv)[0, -1].float(), -1)[target]
    print(f"p(' mat') {name}: {float(p):.3f}")
