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


def wired_gpt2() -> GPT2LMHeadModel:
    cfg = GPT2Config(vocab_size=V, n_positions=P, n_embd=D, n_layer=2, n_head=2, n_inner=4,
                     bos_token_id=0, eos_token_id=0, attn_pdrop=0.0, resid_pdrop=0.0, embd_pdrop=0.0)
    model = GPT2LMHeadModel(cfg)
    eye = torch.eye
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        for ln in [*(b.ln_1 for b in model.transformer.h), *(b.ln_2 for b in model.transformer.h), model.transformer.ln_f]:
            ln.weight.fill_(1.0)
        model.transformer.wte.weight[:, TOK] = eye(V)
        model.transformer.wpe.weight[:, POS] = eye(P)
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
