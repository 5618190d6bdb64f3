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
# # 3. Retrieval heads and KV-cache compression
#
# What you learn: the needle-in-a-haystack protocol behind the `retrieval` score (Wu et al.),
# the masking check (zeroing the queries of the top retrieval heads while decoding, against
# random heads), the `streaming` score (how much of a head's attention falls on the first few
# keys and a recent window), and what a DuoAttention-style cache does to generation with
# `interp.heads.compressed`.
#
# **Settings.** CI: one needle at the end of a haystack of 250 tokens, a 4-head masking check,
# and the streaming score on 256 tokens with a window of 64. Full run: set `FULL = True` (haystacks of 1,000 and 2,000
# tokens at three depths, three needles, the defaults; about 10 minutes on 2 cores).

# %%
MODEL = "smollm2-135m"
FULL = False  # full run: True

# %%
import interp
from interp.heads.settings import default_needles
from interp.models.corpus import text

model = interp.load(MODEL)
needles = default_needles()
print("a needle:", needles[2])
retrieval = {} if FULL else dict(lengths=(250,), depths=(1.0,), needles=needles[2:3], max_new_tokens=10,
                                  mask_k=4, mask_seeds=(0,))
streaming = {} if FULL else dict(tokens=256, window=64)

# %% [markdown]
# ## The needle protocol and the masking check
#
# Each test hides a needle sentence at a depth of a haystack (shipped public-domain text), asks
# the question at the end, and decodes the answer. A head *retrieves* a generated token when its
# arg-max key is the same token inside the needle; its score is the share of answer tokens it
# retrieves, over the tests the model recalls. The check then masks the top heads' queries.

# %%
scores = interp.heads.scan(model, ["retrieval", "streaming"], retrieval=retrieval, streaming=streaming,
                           progress=False)
print(scores.top("retrieval", 5).to_string(index=False))
tests = scores.checks["retrieval_tests"]
print(f"{tests['recalled']} of {tests['tests']} needle tests recalled; first answer: {tests['per_test'][0]['response']!r}")
masking = scores.checks["retrieval_masking"]
print("needle recall with nothing masked, the top heads masked, random heads masked:", masking.get("recall"))
scores.heatmap("retrieval").show()

# %% [markdown]
# ## The streaming score
#
# Near 1: the head reads almost only its attention sinks and recent window, so a sink + window
# cache would cost it little. A kv head serves a group of query heads, so `kv_pattern` takes the
# group's lowest value.

# %%
pattern = scores.kv_pattern("streaming", lowest=True)
print(pattern.round(2).head(8))
scores.heatmap("streaming").show()

# %% [markdown]
# ## A compressed cache: full for a quarter of the kv heads, sink + window for the rest
#
# `compressed` edits the attention mask each layer gets (SDPA stays SDPA), in the prefill and
# every decoding step; the result is exactly that of dropping those keys. It measures, it does
# not save memory.

# %%
keep = scores.keep_full("streaming", share=0.25, lowest=True)  # the quarter that reads furthest back
long_prompt = text("alice")[:800] + "\nWho was Alice talking to?"
print("full cache:", model.generate(long_prompt, max_new_tokens=6))
with interp.heads.compressed(model, keep_full=keep, sink=4, window=64) as cache:
    print("compressed:", model.generate(long_prompt, max_new_tokens=6))
print(f"keys kept: {cache.kept_fraction():.2f} of the full cache")

# %% [markdown]
# ## The real head-wise KV cache
#
# <!-- When interp.heads.headwise_cache lands, show it here: the same `keep` pattern, the memory it
# saves and the same generation, next to `compressed`. -->
# `compressed` keeps every key in memory and hides some of them. A head-wise cache that stores
# only the sinks and window of the streaming heads is being added to interp separately; this
# section will show it on the same `keep` pattern.
