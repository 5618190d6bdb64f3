"""Akyürek et al.'s hard-wired n-gram layers (ICML'24, arXiv 2401.12973), and the small sequence
models the ``regular_languages`` study compares with and without them.

``ngram_attention(ids, n)`` is their static n-gram head: every position i attends uniformly to the
positions j + 1 that follow an earlier match of its last n tokens (x_{j-n+1..j} = x_{i-n+1..i},
j < i, and j + 1 < i), and to nothing where there is no match. ``Ngram(d, n)`` is their layer
``y = t0(A x) + t1(x)`` with two linear maps. ``SequenceModel`` stacks mixers (causal attention,
a GRU or an LSTM, or an n-gram layer) as pre-norm residual blocks with an MLP each; the n-gram
layers go right after the first learned layer, as in their hybrid models. Not a study itself: the
scripts import it from their own folder."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def ngram_attention(ids: torch.Tensor, n: int) -> torch.Tensor:
    """``[batch, length, length]``: row i uniform over the keys j whose previous n tokens equal the
    n tokens ending at i (the successors of every earlier match), zeros where none.

    Built as Akyürek et al.'s ``induction_head`` builds it: the strictly causal match of single
    tokens, shifted down the diagonal n - 1 times and required everywhere, then moved one key right
    (the successor) and kept strictly causal."""
    length = ids.shape[1]
    causal = torch.ones(length, length, dtype=torch.bool, device=ids.device).tril(-1)
    match = (ids[:, :, None] == ids[:, None, :]) & causal  # [b, i, j]: x_i == x_j, j < i
    every = match.clone()
    shifted = match
    for _ in range(1, n):  # x_{i-k} == x_{j-k}: the same mask one step down the diagonal
        shifted = F.pad(shifted, (1, -1, 1, -1), value=False)
        every &= shifted
    succ = F.pad(every, (1, -1), value=False) & causal  # key j + 1 follows the match ending at j
    weights = succ.float()
    return weights / weights.sum(-1, keepdim=True).clamp(min=1)


class Ngram(nn.Module):
    """Akyürek et al.'s ``Ngram(d_model, n)`` layer: ``y = t0(A x) + t1(x)``, A the static n-gram
    attention of the token ids."""

    def __init__(self, d_model: int, n: int):
        super().__init__()
        self.n = n
        self.t0 = nn.Linear(d_model, d_model)
        self.t1 = nn.Linear(d_model, d_model)

    def forward(self, x: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        return self.t0(ngram_attention(ids, self.n) @ x) + self.t1(x)


class CausalAttention(nn.Module):
    """Multi-head causal self-attention (positions come from the model's learned embeddings)."""

    def __init__(self, d_model: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=False)
        self.out = nn.Linear(d_model, d_model, bias=False)

    def forward(self, x: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.out(y.transpose(1, 2).reshape(b, t, d))


class Recurrent(nn.Module):
    """One GRU or LSTM layer of width ``d_model``."""

    def __init__(self, d_model: int, kind: str):
        super().__init__()
        self.rnn = {"gru": nn.GRU, "lstm": nn.LSTM}[kind](d_model, d_model, batch_first=True)

    def forward(self, x: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        return self.rnn(x)[0]


class SequenceModel(nn.Module):
    """Token (and, for attention, learned position) embeddings, pre-norm residual blocks
    ``x += mixer(norm(x)); x += mlp(norm(x))``, a final norm and an unembedding. ``mixer`` is
    ``"attention"``, ``"gru"`` or ``"lstm"``; ``ngram`` lists the orders of the n-gram layers that
    follow the first block (each with an MLP of width d_model, as a block of the stack)."""

    def __init__(self, vocab: int, length: int, mixer: str, layers: int, d_model: int, heads: int = 4,
                 d_mlp: int | None = None, ngram: tuple[int, ...] = ()):
        super().__init__()
        self.embed = nn.Embedding(vocab, d_model)
        self.position = nn.Embedding(length, d_model) if mixer == "attention" else None

        def learned() -> nn.Module:
            return CausalAttention(d_model, heads) if mixer == "attention" else Recurrent(d_model, mixer)

        mixers: list[nn.Module] = [learned()]
        mixers += [Ngram(d_model, n) for n in ngram]
        mixers += [learned() for _ in range(layers - 1)]
        self.mixers = nn.ModuleList(mixers)
        d_mlp = d_mlp or 4 * d_model
        # an n-gram block's MLP is d -> d -> d, as in their gist (4 d^2 weights per n-gram block)
        widths = [d_model if isinstance(m, Ngram) else d_mlp for m in mixers]
        self.norms = nn.ModuleList(nn.LayerNorm(d_model) for _ in range(2 * len(mixers)))
        self.mlps = nn.ModuleList(nn.Sequential(nn.Linear(d_model, w), nn.GELU(), nn.Linear(w, d_model))
                                  for w in widths)
        self.final = nn.LayerNorm(d_model)
        self.unembed = nn.Linear(d_model, vocab, bias=False)
        for m in self.modules():  # GPT-2's small init for the projections; GRU/LSTM keep torch's own
            if isinstance(m, nn.Linear | nn.Embedding):
                nn.init.normal_(m.weight, std=0.02)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.embed(ids)
        if self.position is not None:
            x = x + self.position(torch.arange(ids.shape[1], device=ids.device))
        for i, (mixer, mlp) in enumerate(zip(self.mixers, self.mlps, strict=True)):
            x = x + mixer(self.norms[2 * i](x), ids)
            x = x + mlp(self.norms[2 * i + 1](x))
        return self.unembed(self.final(x))
