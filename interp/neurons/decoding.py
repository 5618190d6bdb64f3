"""Decode every MLP neuron through the LM head (Davies 2025), and agreement between two models.

A neuron's decode is ``softmax(U · v)`` where ``v`` is its weight vector (see
``interp.neurons.vectors``) and ``U`` the unembedding. Layers go one at a time through
``interp.kernels.decode_topk``, which takes vectors in chunks and the vocabulary in blocks,
so the ``[neurons × vocab]`` matrix never exists.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from interp import logs
from interp.errors import InterpError
from interp.kernels import TopTokens, decode_topk
from interp.neurons.vectors import check_layers, check_weights, decoding_vectors, unembedding

CHUNK = 1024  # neurons per matrix product
VOCAB_BLOCK = 65536  # vocabulary slice per product: scores stay at CHUNK × VOCAB_BLOCK floats (256 MiB)


def token_strings(tokenizer: Any, ids: Iterable[int]) -> dict[int, str]:
    """Each distinct id decoded on its own (``' dog'``, leading space kept)."""
    uniq = sorted({int(i) for i in ids})
    if hasattr(tokenizer, "batch_decode"):
        texts = tokenizer.batch_decode([[i] for i in uniq])
    else:
        texts = [tokenizer.decode([i]) for i in uniq]
    return dict(zip(uniq, texts, strict=True))


def iter_layers(
    model: Any,
    *,
    weights: str = "up",
    k: int = 10,
    apply_input_ln: bool | None = None,
    apply_final_norm: bool = True,
    layers: int | Iterable[int] | None = None,
    progress: bool = True,
    unembed: torch.Tensor | None = None,
) -> Iterator[tuple[int, torch.Tensor, TopTokens]]:
    """``(layer, vectors [d_mlp, d_model], top-k)`` for each chosen layer, under one progress bar."""
    check_weights(model, weights)
    chosen = check_layers(model, layers)
    u = unembedding(model) if unembed is None else unembed
    bar = logs.progress(total=len(chosen) * model.cfg.d_mlp, desc=f"decoding {weights} neurons", enabled=progress,
                        unit="neuron")
    try:
        for layer in chosen:
            v = decoding_vectors(model, layer, weights, apply_input_ln=apply_input_ln,
                                 apply_final_norm=apply_final_norm).to(u.device)
            yield layer, v, decode_topk(v, u, k, chunk=CHUNK, vocab_block=VOCAB_BLOCK, progress=bar)
    finally:
        bar.close()


# The columns of a decode table (neurons.parquet); readers need all but token_id.
COLUMNS = ("layer", "neuron", "rank", "token", "token_id", "prob")


def decode(
    model: Any,
    weights: str = "up",
    k: int = 10,
    *,
    apply_input_ln: bool | None = None,
    apply_final_norm: bool = True,
    layers: int | Iterable[int] | None = None,
    progress: bool = True,
) -> pd.DataFrame:
    """Top-``k`` tokens of every neuron: columns ``layer, neuron, rank, token, token_id, prob``.

    ``rank`` is 1 for the top token; ``prob`` is the token's probability in the softmax over
    the whole vocabulary of ``U · v``. Defaults: ``apply_input_ln`` is on for the reading
    vectors (``up``, ``gate``) because the neuron reads ``g_in * x``, so ``g_in * w`` is the
    direction it responds to; ``apply_final_norm`` is on because that direction passes the
    final norm's gain before the unembedding. Turn both off for the raw ``softmax(U w)``.

    Args:
        weights: which weight vector of each neuron to decode: up, gate or down.
        k: top tokens kept per neuron.
        layers: the layers to decode (default: all).
        progress: show a progress bar.

    Returns:
        A pandas DataFrame, ``k`` rows per neuron.

    >>> import interp
    >>> model = interp.load("smollm2-135m")                                       # doctest: +SKIP
    >>> table = interp.neurons.decode(model, k=5)                                # doctest: +SKIP
    >>> table[(table.layer == 3) & (table.neuron == 7)]                          # doctest: +SKIP
    """
    parts = []
    for layer, _, top in iter_layers(model, weights=weights, k=k, apply_input_ln=apply_input_ln,
                                     apply_final_norm=apply_final_norm, layers=layers, progress=progress):
        n = top.index.shape[0]
        parts.append(pd.DataFrame({
            "layer": np.full(n * k, layer, dtype=np.int32),
            "neuron": np.repeat(np.arange(n, dtype=np.int32), k),
            "rank": np.tile(np.arange(1, k + 1, dtype=np.int32), n),
            "token_id": top.index.cpu().numpy().ravel().astype(np.int64),
            "prob": top.prob.cpu().numpy().ravel().astype(np.float32),
        }))
    df = pd.concat(parts, ignore_index=True)
    names = token_strings(model.tokenizer, df["token_id"].unique())
    df.insert(3, "token", df["token_id"].map(names))
    df = df[list(COLUMNS)]
    df.attrs.update(model=str(model.name), weights=weights, k=k, apply_final_norm=apply_final_norm,
                    apply_input_ln=weights in ("up", "gate") if apply_input_ln is None else apply_input_ln)
    return df


@dataclass
class Agreement:
    """Share of neurons whose top token is the same in two models, overall and per layer.

    Attributes:
        share: the share of neurons whose top token agrees (0..1).
        by_layer: the same share per layer: columns ``layer, share``.
    """

    share: float
    by_layer: pd.DataFrame  # layer, neurons, same_top, share

    def __float__(self) -> float:
        return self.share


def _shape(model: Any) -> tuple[int, int, int, int]:
    c = model.cfg
    return c.n_layers, c.d_mlp, c.d_model, c.d_vocab


def agreement(
    model_a: Any,
    model_b: Any,
    weights: str = "up",
    *,
    apply_input_ln: bool | None = None,
    apply_final_norm: bool = True,
    layers: int | Iterable[int] | None = None,
    progress: bool = True,
) -> Agreement:
    """Share of neurons with the same top token in two models of one architecture.

    Each model decodes through its own norms and unembedding (the base vs instruct check
    of Davies 2025, who reports about 75% for Llama-3.1-8B).

    Args:
        model_a: one model.
        model_b: another of the same architecture and shape.
        weights: ``up``, ``gate`` or ``down``.
        apply_input_ln: scale by the MLP input norm's gain (default: on for reading rows).
        apply_final_norm: scale by the final norm's gain.
        layers: the layers compared (default: all).
        progress: show a progress bar.

    Returns:
        An ``Agreement`` (``share`` and ``by_layer``).

    >>> interp.neurons.agreement(base, instruct).share                          # doctest: +SKIP
    """
    if _shape(model_a) != _shape(model_b):
        names = "(n_layers, d_mlp, d_model, d_vocab)"
        raise InterpError(f"cannot compare neurons of models with different shapes {names}: "
                          f"{model_a.name} has {_shape(model_a)}, {model_b.name} has {_shape(model_b)}")
    kwargs = dict(weights=weights, k=1, apply_input_ln=apply_input_ln, apply_final_norm=apply_final_norm,
                  layers=layers, progress=progress)
    rows = []
    for (layer, _, ta), (_, _, tb) in zip(iter_layers(model_a, **kwargs), iter_layers(model_b, **kwargs),  # type: ignore[arg-type]
                                          strict=True):
        same = int((ta.index[:, 0] == tb.index[:, 0].to(ta.index.device)).sum())
        rows.append({"layer": layer, "neurons": ta.index.shape[0], "same_top": same})
    table = pd.DataFrame(rows)
    table["share"] = table["same_top"] / table["neurons"]
    return Agreement(share=float(table["same_top"].sum() / table["neurons"].sum()), by_layer=table)
