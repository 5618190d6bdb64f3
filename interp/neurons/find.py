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
import weakref
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from interp.errors import InterpError, UnknownNameError, whole_number
from interp.models.fingerprint import weights_fingerprint
from interp.neurons.decoding import iter_layers, token_strings
from interp.neurons.vectors import READS, check_layers, check_weights, decoding_vectors, unembedding

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

    Returns:
        A pandas DataFrame, one row per word and variant.

    >>> concept_tokens(model, ["dog", "Wisconsin"])                               # doctest: +SKIP
    """
    if on_split not in ON_SPLIT:
        raise UnknownNameError("on_split", on_split, ON_SPLIT, plural="on_split values")
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


def used_ids(table: pd.DataFrame) -> list[int]:
    return sorted({int(i) for i in table["used_id"] if i >= 0})


SORTS = ("rank", "z", "prob")
CACHE_ENTRIES = 4  # decoded tables kept per model (each [layers x d_mlp x k] ids and a few vectors)


@dataclass
class DecodedLayer:
    """What ``find`` needs of one layer's decode, whatever the concept."""

    layer: int
    index: torch.Tensor  # [d_mlp, k] top-k token ids, best first
    top_prob: torch.Tensor  # [d_mlp] probability of the top token
    lse: torch.Tensor  # [d_mlp] log-sum-exp of the logits over the vocabulary
    vmean: torch.Tensor  # [d_mlp] mean logit over the vocabulary (v · mean unembedding row)
    std: torch.Tensor  # [d_mlp] standard deviation of the logits over the vocabulary


@dataclass
class _Entry:
    fingerprint: tuple
    layers: list[DecodedLayer]


_CACHE: weakref.WeakKeyDictionary[Any, OrderedDict[tuple, _Entry]] = weakref.WeakKeyDictionary()


def decoded(model: Any, *, weights: str = "up", k: int = 50, apply_input_ln: bool | None = None,
            apply_final_norm: bool = True, layers: int | Iterable[int] | None = None,
            progress: bool = True) -> list[DecodedLayer]:
    """Every chosen layer's decode for ``find``, from the cache when the model's weights and the
    settings are those it was built with (see ``find``)."""
    check_weights(model, weights)
    chosen = check_layers(model, layers)
    ln = weights in READS if apply_input_ln is None else bool(apply_input_ln)
    key = (weights, int(k), ln, bool(apply_final_norm), tuple(chosen))
    stamp = weights_fingerprint(model)  # any change to any weight, also through weight.data, changes it
    entries = _CACHE.setdefault(model, OrderedDict())
    entry = entries.get(key)
    if entry is not None and entry.fingerprint == stamp:
        entries.move_to_end(key)
        return entry.layers
    if entry is not None or any(e.fingerprint != stamp for e in entries.values()):
        entries.clear()  # the weights changed: every table of this model is stale
    u_all = unembedding(model)
    mean, cov = u_all.mean(0), torch.cov(u_all.T, correction=0)
    out = []
    for layer, v, tt in iter_layers(model, weights=weights, k=k, apply_input_ln=apply_input_ln,
                                    apply_final_norm=apply_final_norm, layers=chosen, progress=progress,
                                    unembed=u_all):
        out.append(DecodedLayer(layer=layer, index=tt.index, top_prob=tt.prob[:, 0].clone(), lse=tt.lse,
                                vmean=v @ mean, std=((v @ cov) * v).sum(1).clamp_min(1e-30).sqrt()))
    entries[key] = _Entry(stamp, out)
    while len(entries) > CACHE_ENTRIES:
        entries.popitem(last=False)
    return out


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

    The concept-independent part of the work (every neuron's top-k decode, log-sum-exp and
    spread over the vocabulary) is cached per model and decoding settings (``weights``, ``k``,
    the norm options, ``layers``), so further searches on the same model take a moment; the
    cache is dropped when any weight of the model is changed (in place, also through
    ``weight.data``, or replaced; see ``interp.models.fingerprint.weights_fingerprint``) and with the model itself.

    Args:
        top: rows returned (None: every neuron).
        k: top tokens per neuron searched for the concept's tokens.
        apply_input_ln: scale by the MLP input norm's gain (default: on for reading rows).
        apply_final_norm: scale by the final norm's gain.
        on_split: what to do with a word that is several tokens: ``first``, ``skip`` or ``error``.
        progress: show a progress bar.

    >>> import interp, interp.neurons
    >>> model = interp.load("smollm2-135m")                                       # doctest: +SKIP
    >>> interp.neurons.find(model, ["dog", "dogs"], top=5)                       # doctest: +SKIP
    """
    if sort not in SORTS:
        raise UnknownNameError("sort", sort, SORTS)
    k = whole_number(k, 1, "find: k (top tokens per neuron, at most the vocabulary)",
                     high=model.cfg.d_vocab)
    if top is not None:
        top = whole_number(top, 1, "find: top (None: every neuron)")
    table = concept_tokens(model, concept, on_split)
    ids = used_ids(table)
    u = unembedding(model)[ids]
    parts = []
    for layer in decoded(model, weights=weights, k=k, apply_input_ln=apply_input_ln,
                         apply_final_norm=apply_final_norm, layers=layers, progress=progress):
        v = decoding_vectors(model, layer.layer, weights, apply_input_ln=apply_input_ln,
                             apply_final_norm=apply_final_norm).to(u.device)
        logits = v @ u.T  # [d_mlp, n_concept_tokens]
        best = logits.max(1)
        hit = torch.isin(layer.index, torch.tensor(ids, device=layer.index.device))
        rank = torch.where(hit.any(1), hit.int().argmax(1) + 1, torch.zeros_like(best.indices)).cpu().numpy()
        parts.append(pd.DataFrame({
            "layer": layer.layer,
            "neuron": np.arange(v.shape[0]),
            "rank_of_concept": rank,  # 0: not among the top k
            "concept_z": ((best.values - layer.vmean) / layer.std).cpu().numpy(),
            "concept_prob": torch.exp(logits - layer.lse[:, None]).sum(1).cpu().numpy(),
            "concept_token_id": np.asarray(ids)[best.indices.cpu().numpy()],
            "top_prob": layer.top_prob.cpu().numpy(),
            "top_ids": list(layer.index[:, :5].cpu().numpy()),
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
