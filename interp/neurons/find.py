"""Search neurons by concept: which neurons decode to a word's tokens.

A concept is one or more words; each counts with and without a leading space (``"dog"`` and
``" dog"`` are different tokens in BPE vocabularies), unless it is given with a leading
space: ``" red"`` means that token only (``"red"`` alone is also the end of ``"bored"``).
A word the tokenizer splits into several tokens is scored by its first token, and the split
is reported (a warning and the ``concept`` table in ``find(...).attrs``), since a first
piece like ``" Wis"`` may mean something else entirely.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch

from interp.errors import InterpError, UnknownNameError
from interp.neurons.decoding import iter_layers, token_strings
from interp.neurons.vectors import unembedding

ON_SPLIT = ("first", "skip", "error")


class ConceptSplitWarning(UserWarning):
    """A concept word is more than one token; only its first token is scored."""


def _words(concept: str | Sequence[str]) -> list[str]:
    words = [concept] if isinstance(concept, str) else list(concept)
    words = [(" " if w[:1].isspace() else "") + w.strip() for w in words if w.strip()]
    if not words:
        raise InterpError("a concept needs at least one non-empty word, e.g. find(model, ['dog', 'dogs'])")
    return words


def _encode(tokenizer: Any, text: str) -> list[int]:
    try:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    except TypeError:  # tokenizers without the keyword
        ids = tokenizer(text)["input_ids"]
    return [int(i) for i in (ids.tolist() if hasattr(ids, "tolist") else ids)]


def concept_tokens(model: Any, concept: str | Sequence[str], on_split: str = "first") -> pd.DataFrame:
    """How each word of a concept tokenizes, with and without a leading space.

    Columns: ``word, variant, token_ids, tokens, split, used_id`` (``used_id`` is -1 for a
    skipped split variant). ``on_split``: ``"first"`` scores a split word's first token and
    warns, ``"skip"`` leaves it out (warning), ``"error"`` raises.

    >>> concept_tokens(model, ["dog", "Wisconsin"])                               # doctest: +SKIP
    """
    if on_split not in ON_SPLIT:
        raise UnknownNameError("on_split", on_split, ON_SPLIT)
    rows: list[dict[str, Any]] = []
    for word in _words(concept):
        # " dog" asks for that token only; "dog" for both "dog" and " dog".
        for variant in [word] if word.startswith(" ") else [word, " " + word]:
            ids = _encode(model.tokenizer, variant)
            if not ids:
                continue
            rows.append({"word": word, "variant": variant, "token_ids": ids, "split": len(ids) > 1,
                         "used_id": -1 if len(ids) > 1 and on_split == "skip" else ids[0]})
    names = token_strings(model.tokenizer, [i for r in rows for i in r["token_ids"]])
    for r in rows:
        r["tokens"] = [names[i] for i in r["token_ids"]]
    table = pd.DataFrame(rows, columns=["word", "variant", "token_ids", "tokens", "split", "used_id"])
    for r in table[table["split"]].itertuples():
        message = f"{r.variant!r} is {len(r.tokens)} tokens {r.tokens}"
        if on_split == "error":
            raise InterpError(message + "; pass single-token words or on_split='first'/'skip'")
        action = f"scoring its first token {r.tokens[0]!r}" if on_split == "first" else "left out"
        warnings.warn(f"{message}: {action}", ConceptSplitWarning, stacklevel=3)
    if not (table["used_id"] >= 0).any():
        raise InterpError(f"no variant of {_words(concept)} is a single token; pass on_split='first' to use first tokens")
    return table


def _used_ids(table: pd.DataFrame) -> list[int]:
    return sorted({int(i) for i in table["used_id"] if i >= 0})


SORTS = ("rank", "z", "prob")


def find(
    model: Any,
    concept: str | Sequence[str],
    *,
    weights: str = "up",
    top: int | None = 20,
    k: int = 50,
    sort: str = "rank",
    apply_input_ln: bool | None = None,
    apply_final_norm: bool = True,
    layers: int | Iterable[int] | None = None,
    on_split: str = "first",
    progress: bool = True,
) -> pd.DataFrame:
    """Neurons ranked by how strongly they decode to a concept's tokens.

    Columns: ``layer, neuron, rank_of_concept, concept_z, concept_prob, concept_token,
    top_prob, top_tokens``. ``rank_of_concept`` is the best rank (1 = top token) of a
    concept token in the neuron's decode if it is among the top ``k``, else missing;
    ``concept_z`` is how many standard deviations the best concept token's logit lies above
    the mean logit over the vocabulary (exact, from the unembedding's mean and covariance);
    ``concept_prob`` is the summed softmax probability of the concept tokens (exact, from the
    decode's log-sum-exp). Probabilities of raw weight vectors are close to uniform and
    depend on the vector's norm, so the default ``sort="rank"`` orders by rank (missing
    last), then by ``concept_z``; ``"z"`` and ``"prob"`` sort by one column. ``top_tokens``
    are the neuron's top 5. ``top=None`` keeps every neuron. How the words tokenized is in
    ``.attrs["concept"]``. Decoding options as in ``decode``.

    >>> import interp, interp.neurons
    >>> model = interp.load("smollm2-135m")                                       # doctest: +SKIP
    >>> interp.neurons.find(model, ["dog", "dogs"], top=5)                       # doctest: +SKIP
    """
    if sort not in SORTS:
        raise UnknownNameError("sort", sort, SORTS)
    table = concept_tokens(model, concept, on_split)
    ids = _used_ids(table)
    u_all = unembedding(model)
    mean, cov = u_all.mean(0), torch.cov(u_all.T, correction=0)
    u = u_all[ids]
    parts = []
    for layer, v, tt in iter_layers(model, weights=weights, k=k, apply_input_ln=apply_input_ln,
                                    apply_final_norm=apply_final_norm, layers=layers, progress=progress,
                                    unembed=u_all):
        logits = v @ u.T  # [d_mlp, n_concept_tokens]
        std = ((v @ cov) * v).sum(1).clamp_min(1e-30).sqrt()
        best = logits.max(1)
        hit = torch.isin(tt.index, torch.tensor(ids, device=tt.index.device))
        rank = torch.where(hit.any(1), hit.int().argmax(1) + 1, torch.zeros_like(best.indices)).cpu().numpy()
        parts.append(pd.DataFrame({
            "layer": layer,
            "neuron": np.arange(v.shape[0]),
            "rank_of_concept": rank,  # 0: not among the top k
            "concept_z": ((best.values - v @ mean) / std).cpu().numpy(),
            "concept_prob": torch.exp(logits - tt.lse[:, None]).sum(1).cpu().numpy(),
            "concept_token_id": np.asarray(ids)[best.indices.cpu().numpy()],
            "top_prob": tt.prob[:, 0].cpu().numpy(),
            "top_ids": list(tt.index[:, :5].cpu().numpy()),
        }))
    df = pd.concat(parts, ignore_index=True)
    df["rank_of_concept"] = df["rank_of_concept"].astype("Int64").mask(df["rank_of_concept"] == 0)
    if sort == "rank":
        df = df.sort_values(["rank_of_concept", "concept_z"], ascending=[True, False], na_position="last", kind="stable")
    else:
        df = df.sort_values("concept_z" if sort == "z" else "concept_prob", ascending=False, kind="stable")
    df = (df if top is None else df.head(top)).reset_index(drop=True)
    names = token_strings(model.tokenizer, list(df["concept_token_id"]) + [int(i) for r in df["top_ids"] for i in r])
    df.insert(5, "concept_token", df.pop("concept_token_id").map(names))
    df["top_tokens"] = [", ".join(repr(names[int(i)]) for i in r) for r in df.pop("top_ids")]
    df.attrs["concept"] = table.to_dict("records")
    return df
