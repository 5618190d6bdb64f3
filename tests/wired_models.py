"""A tiny GPT-2 with heads wired by hand: previous-token, BOS sink, induction, duplicate-token.

Residual (d_model 96): token one-hot [0, 16), position one-hot [16, 48), a slot [48, 64) where
the previous-token head writes the previous token, and 32 unused dimensions. Inside each head
(d_head 48), dimensions [0, 16) hold token features and [16, 48) position features.

- L0H0, previous-token: query position i matches key position i-1; copies that token to the slot.
- L0H1, BOS sink: every query matches key position 0; writes nothing.
- L1H0, induction: the current token matches the slot (the previous token) of earlier keys, so
  it attends to the token after an earlier copy of the current token, and writes that token
  into the token dimensions, where the tied unembedding reads it as the prediction.
- L1H1, duplicate-token: the current token matches earlier equal tokens; its own position is
  pushed away; writes nothing. MLPs are zero.
"""

from __future__ import annotations

import torch
from transformers import GPT2Config, GPT2LMHeadModel

V, P, D, DH = 16, 32, 96, 48
TOK, POS, SLOT = slice(0, V), slice(V, V + P), slice(V + P, 2 * V + P)
HTOK, HPOS = slice(0, V), slice(V, V + P)  # within a head
SHARP = 4.0


class CharTokenizer:
    """Characters to ids 1..15 (0 is BOS): enough tokenizer for the head-scan protocols."""

    bos_token_id = pad_token_id = eos_token_id = 0
    pad_token = eos_token = bos_token = "<s>"
    all_special_ids = [0]
    padding_side = "left"
    chat_template = None

    def __len__(self):
        return V

    def __call__(self, text, return_tensors=None, add_special_tokens=True, **kwargs):
        ids = [1 + (ord(c) % (V - 1)) for c in text]
        return {"input_ids": torch.tensor([ids]) if return_tensors == "pt" else ids}

    def decode(self, ids, **kwargs):
        return " ".join(str(int(i)) for i in ids)

    def batch_decode(self, rows, **kwargs):
        return [self.decode(r) for r in rows]


def _head(attn, h: int, part: str) -> torch.Tensor:
    """The [d_model, d_head] block of c_attn's weight for head h's q, k or v (Conv1D is [in, out])."""
    offset = {"q": 0, "k": D, "v": 2 * D}[part] + h * DH
    return attn.c_attn.weight[:, offset : offset + DH]


def _out(attn, h: int) -> torch.Tensor:
    """The [d_head, d_model] block of c_proj's weight for head h."""
    return attn.c_proj.weight[h * DH : (h + 1) * DH]


def _blank_gpt2(cfg: GPT2Config, pos: slice, n_pos: int) -> GPT2LMHeadModel:
    """A GPT-2 with every weight zero but unit layer norms, one-hot tokens in TOK and one-hot
    positions in ``pos``: heads are then wired by hand."""
    model = GPT2LMHeadModel(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        for ln in [*(b.ln_1 for b in model.transformer.h), *(b.ln_2 for b in model.transformer.h), model.transformer.ln_f]:
            ln.weight.fill_(1.0)
        model.transformer.wte.weight[:, TOK] = torch.eye(V)
        model.transformer.wpe.weight[:, pos] = torch.eye(n_pos)
    return model


def wired_gpt2() -> GPT2LMHeadModel:
    cfg = GPT2Config(vocab_size=V, n_positions=P, n_embd=D, n_layer=2, n_head=2, n_inner=4,
                     bos_token_id=0, eos_token_id=0, attn_pdrop=0.0, resid_pdrop=0.0, embd_pdrop=0.0)
    model = _blank_gpt2(cfg, POS, P)
    eye = torch.eye
    with torch.no_grad():
        shift = torch.zeros(P, P)
        shift[torch.arange(1, P), torch.arange(P - 1)] = 1.0  # position i -> feature i-1
        a0, a1 = model.transformer.h[0].attn, model.transformer.h[1].attn

        _head(a0, 0, "q")[POS, HPOS] = SHARP * shift
        _head(a0, 0, "k")[POS, HPOS] = eye(P)
        _head(a0, 0, "v")[TOK, HTOK] = eye(V)
        _out(a0, 0)[HTOK, SLOT] = eye(V) / 5.0

        _head(a0, 1, "q")[TOK, V] = SHARP  # the same for every query
        _head(a0, 1, "k")[V, V] = 1.0  # position 0's feature

        _head(a1, 0, "q")[TOK, HTOK] = SHARP * eye(V)
        _head(a1, 0, "k")[SLOT, HTOK] = eye(V)
        _head(a1, 0, "v")[TOK, HTOK] = eye(V)
        _out(a1, 0)[HTOK, TOK] = 3.0 * eye(V)

        _head(a1, 1, "q")[TOK, HTOK] = SHARP * eye(V)
        _head(a1, 1, "k")[TOK, HTOK] = eye(V)
        _head(a1, 1, "q")[POS, HPOS] = SHARP * eye(P)
        _head(a1, 1, "k")[POS, HPOS] = -2.0 * eye(P)
    return model.eval()


def wired_streaming_gpt2(sharp: float = 24.0) -> GPT2LMHeadModel:
    """Heads for the streaming score: L0H0 previous-token (inside any recent window), L0H1 BOS
    sink (the first key), L1H0 and L1H1 reading positions 1 and 2 (far back from late queries).
    ``sharp``: each head's logit margin, so nearly all of its attention is on its target."""
    cfg = GPT2Config(vocab_size=V, n_positions=P, n_embd=D, n_layer=2, n_head=2, n_inner=4,
                     bos_token_id=0, eos_token_id=0, attn_pdrop=0.0, resid_pdrop=0.0, embd_pdrop=0.0)
    model = _blank_gpt2(cfg, POS, P)
    with torch.no_grad():
        shift = torch.zeros(P, P)
        shift[torch.arange(1, P), torch.arange(P - 1)] = 1.0
        a0, a1 = model.transformer.h[0].attn, model.transformer.h[1].attn
        _head(a0, 0, "q")[POS, HPOS] = sharp * shift
        _head(a0, 0, "k")[POS, HPOS] = torch.eye(P)
        for attn, h, target in ((a0, 1, 0), (a1, 0, 1), (a1, 1, 2)):
            _head(attn, h, "q")[TOK, V + target] = sharp  # every query, the same
            _head(attn, h, "k")[V + target, V + target] = 1.0  # the key at position ``target``
    return model.eval()


# -- n-gram heads -------------------------------------------------------------------------------
# 128 positions, so that windows of natural text hold repeated 3- and 4-grams. Residual (d_model
# 640): token one-hot [0, 16), position one-hot [16, 144), then four slots of 16 where layer 0
# writes the tokens 1, 2, 3 and 4 places back, at the token one-hot's scale. Inside a head
# (d_head 128) the query/key features come in blocks of 16.
#
# - L0H0..L0H3: shift-k heads (k = 1..4): query position i matches key position i-k; each copies
#   that token into slot k. L0H4: BOS sink.
# - L1H(n-1), the n-gram head of order n = 1..4: key j scores one match per agreeing pair
#   x_i = x_{j-1}, x_{i-1} = x_{j-2}, ..., x_{i-n+1} = x_{j-n} (the query's token and slots
#   against the key's slots), so it attends to the tokens that followed earlier occurrences of
#   the current n-gram. L1H4: BOS sink. Layer 1 writes nothing; MLPs are zero.

NG_P, NG_HEADS, NG_DH = 128, 5, 128
NG_D = NG_HEADS * NG_DH
NG_POS = slice(V, V + NG_P)
NG_SLOTS = [slice(V + NG_P + V * k, V + NG_P + V * (k + 1)) for k in range(4)]  # slot k: the token k+1 back


def _ng_head(attn, h: int, part: str) -> torch.Tensor:
    offset = {"q": 0, "k": NG_D, "v": 2 * NG_D}[part] + h * NG_DH
    return attn.c_attn.weight[:, offset : offset + NG_DH]


def wired_ngram_gpt2() -> GPT2LMHeadModel:
    cfg = GPT2Config(vocab_size=V, n_positions=NG_P, n_embd=NG_D, n_layer=2, n_head=NG_HEADS, n_inner=4,
                     bos_token_id=0, eos_token_id=0, attn_pdrop=0.0, resid_pdrop=0.0, embd_pdrop=0.0)
    model = _blank_gpt2(cfg, NG_POS, NG_P)
    eye = torch.eye
    block = [slice(V * m, V * (m + 1)) for m in range(4)]  # feature blocks inside a head
    unit = (NG_D / 2) ** -0.5  # layer 0 sees a token feature of about 1 / unit after its layer norm
    with torch.no_grad():
        a0, a1 = model.transformer.h[0].attn, model.transformer.h[1].attn
        for k in range(1, 5):
            shift = torch.zeros(NG_P, NG_P)
            shift[torch.arange(k, NG_P), torch.arange(NG_P - k)] = 1.0  # position i -> feature i-k
            h = k - 1
            _ng_head(a0, h, "q")[NG_POS, 0:NG_P] = SHARP * shift
            _ng_head(a0, h, "k")[NG_POS, 0:NG_P] = eye(NG_P)
            _ng_head(a0, h, "v")[TOK, 0:V] = eye(V)
            a0.c_proj.weight[h * NG_DH : h * NG_DH + V, NG_SLOTS[h]] = unit * eye(V)
        for attn in (a0, a1):
            _ng_head(attn, 4, "q")[TOK, V] = SHARP
            _ng_head(attn, 4, "k")[V, V] = 1.0  # position 0's feature
        for n in range(1, 5):
            q, k = _ng_head(a1, n - 1, "q"), _ng_head(a1, n - 1, "k")
            q[TOK, block[0]] = SHARP * eye(V)  # x_i against the key's x_{j-1}
            k[NG_SLOTS[0], block[0]] = eye(V)
            for m in range(1, n):  # x_{i-m} against the key's x_{j-1-m}
                q[NG_SLOTS[m - 1], block[m]] = SHARP * eye(V)
                k[NG_SLOTS[m], block[m]] = eye(V)
    return model.eval()


# -- a tiny Hugging Face folder for CLI runs --------------------------------------------------------


def alice_word_tokenizer(vocab: int = 128, drop: str = ""):
    """A word-level fast tokenizer (lower-cased) over the most frequent words and marks of the
    shipped text, ``[UNK]`` for the rest; its normaliser removes the characters in ``drop``,
    so they get no token at all (as some normalisers do with accents or control characters)."""
    import re
    from collections import Counter

    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from interp.models.corpus import text

    special = ["[PAD]", "[UNK]", "[EOS]"]
    counts = Counter(re.findall(r"\w+|[^\w\s]", text("alice").lower()))
    words = special + [w for w, _ in counts.most_common(vocab - len(special))]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    steps = [normalizers.Lowercase()] + ([normalizers.Replace(Regex(f"[{re.escape(drop)}]"), "")] if drop else [])
    tok.normalizer = normalizers.Sequence(steps)
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]", eos_token="[EOS]")


def tiny_llama_folder(folder, n_ctx: int = 256, seed: int = 0):
    """A random 3-layer Llama (4 query heads, 2 kv heads) with ``alice_word_tokenizer``,
    saved as a local Hugging Face folder; returns the folder."""
    from transformers import AutoModelForCausalLM, LlamaConfig

    tok = alice_word_tokenizer()
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=96, num_hidden_layers=3,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=n_ctx,
                      pad_token_id=0, eos_token_id=2)
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32).eval()
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder
