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
# # 7. Heads as they form: a checkpoint timeline
#
# What you learn: how to scan a series of training checkpoints and read them as one
# `Timeline`, on a tiny 2-layer attention model trained here, on the CPU, on text in which
# passages recur (so copying pays off and an induction head can form).
#
# The model reads characters (a vocabulary of about 70), so it trains in seconds per hundred steps.
#
# **Settings.** CI trains for 150 steps (a timeline of 4 checkpoints; induction has barely
# begun). Full run: `STEPS, SAVE_EVERY = 1800, 150` (the induction-emergence case study's
# length, a few minutes on 2 cores).

# %%
STEPS, SAVE_EVERY = 150, 50  # full run: STEPS, SAVE_EVERY = 1800, 150

# %%
import tempfile
from pathlib import Path

import torch
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

import interp
from interp.heads.timeline import Timeline
from interp.models.corpus import text

corpus = text("alice")
chars = ["<s>", *sorted(set(corpus))]  # one token per character; <s> is BOS, padding and unknown
word_level = Tokenizer(models.WordLevel({c: i for i, c in enumerate(chars)}, unk_token="<s>"))
word_level.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
word_level.decoder = decoders.Fuse()
tok = PreTrainedTokenizerFast(tokenizer_object=word_level, bos_token="<s>", unk_token="<s>", pad_token="<s>",
                              eos_token="<s>")
ids = torch.tensor(tok(corpus)["input_ids"])
print(len(chars), "characters,", len(ids), "training tokens")

torch.manual_seed(0)
cfg = LlamaConfig(vocab_size=len(chars), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=256,
                  bos_token_id=0, eos_token_id=0, pad_token_id=0)
net = LlamaForCausalLM(cfg)
opt = torch.optim.AdamW(net.parameters(), lr=3e-3)

# %% [markdown]
# ## Train, saving checkpoints
#
# Each window of 64 tokens repeats its first half, so the second half is predictable in context.

# %%
work = Path(tempfile.mkdtemp())
g = torch.Generator().manual_seed(0)


def batch(n=8, half=32):
    starts = torch.randint(0, len(ids) - half, (n,), generator=g)
    first = torch.stack([ids[s:s + half] for s in starts])
    return torch.cat([first, first], 1)


checkpoints = []
for step in range(STEPS + 1):
    if step % SAVE_EVERY == 0:
        folder = work / f"checkpoint-{step}"
        net.save_pretrained(folder)
        tok.save_pretrained(folder)
        checkpoints.append((step, folder))
    if step == STEPS:
        break
    x = batch()
    loss = net(input_ids=x, labels=x).loss
    opt.zero_grad()
    loss.backward()
    opt.step()
    if step % SAVE_EVERY == 0:
        print(f"step {step}: loss {loss.item():.2f}")

# %% [markdown]
# ## Scan every checkpoint, then read them as one timeline

# %%
reports = []
for step, folder in checkpoints:
    model = interp.load(str(folder))
    scores = interp.heads.scan(model, ["prev_token", "induction"], lengths=(24,), samples=4, causal_checks=False,
                               progress=False)
    reports.append((step, folder.name, scores))
timeline = Timeline.from_reports(reports)
print("heads whose induction score peaks highest:", ["L{}H{}".format(*h) for h in timeline.top_heads("induction", 3)])
print("best head per score at each checkpoint:")
print(timeline.df.groupby(["step", "score"])["value"].max().unstack().round(3))
timeline.figure(["prev_token", "induction"], top=3).show()
