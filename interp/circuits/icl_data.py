"""Few-shot classification prompts from the shipped datasets, with token roles located after tokenisation.

A prompt with k demonstrations reads (sentiment)::

    Review: The film was a delight from start to finish.
    Sentiment: positive

    Review: ...
    Sentiment:

Token roles follow Cho et al. ("Revisiting In-context Learning Inference Circuit"): the
*forerunner* ``s_i`` is the last token of the label prefix (the ":"), the *label token* ``y_i``
the token after it, ``x_i`` the tokens of the demonstration text; the query ends at ``s_q``.
Roles are found from character offsets of the whole prompt's tokenisation (or, for tokenizers
without offsets, from the lengths of tokenised prefixes), so merges across piece boundaries
cannot shift them silently: each role is checked to cover the characters it should.

>>> from interp.circuits.icl_data import load_dataset
>>> ds = load_dataset("sentiment")
>>> ds.labels, len(ds.items) >= 200
(['positive', 'negative'], True)
>>> prompts = build_prompts(ds, model.tokenizer, k=4, n=8, seed=0)     # doctest: +SKIP
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from interp.core.inputs import left_pad
from interp.errors import BadInputError, UnknownNameError

DATASETS = ("sentiment", "topic")


@dataclass(frozen=True)
class ICLDataset:
    """A labelled dataset and its prompt template."""

    name: str
    labels: list[str]
    input_prefix: str
    label_prefix: str
    items: list[tuple[str, int]]  # (text, label index)
    licence: str = ""


def load_dataset(name: str) -> ICLDataset:
    """A shipped dataset (``sentiment``, ``topic``) or a JSON file of the same layout."""
    if name in DATASETS:
        data = json.loads(resources.files("interp").joinpath(f"data/icl_{name}.json").read_text(encoding="utf-8"))
    elif Path(name).suffix == ".json" and Path(name).is_file():
        try:
            data = json.loads(Path(name).read_text(encoding="utf-8"))
            if not isinstance(data, dict) or not {"labels", "items", "template"} <= set(data):
                raise ValueError("it needs the keys labels, items and template")
            labels = list(data["labels"])
            bad = sorted({it["label"] for it in data["items"]} - set(labels))
        except (ValueError, TypeError, KeyError) as exc:
            raise BadInputError(f"ICL dataset {name} is not a dataset file: {exc}; see the shipped "
                                "interp/data/icl_sentiment.json for the layout") from None
    else:
        raise UnknownNameError("ICL dataset", name, DATASETS, hint="or the path of a JSON file with the same layout")
    labels = list(data["labels"])
    bad = sorted({it["label"] for it in data["items"]} - set(labels))
    if bad:
        raise BadInputError(f"dataset {name!r} has items labelled {bad}, not among its labels {labels}")
    items = [(it["text"], labels.index(it["label"])) for it in data["items"]]
    t = data["template"]
    return ICLDataset(data.get("task", name), labels, t["input_prefix"], t["label_prefix"], items, data.get("licence", ""))


@dataclass
class Prompt:
    """One k-shot prompt: token ids and the positions of every role (indices into ``ids``)."""

    text: str
    ids: list[int]
    label: int  # the query's true label index
    demo_labels: list[int]
    forerunners: list[int]  # s_1..s_k, then s_q (the last token)
    label_positions: list[int]  # y_1..y_k
    text_spans: list[tuple[int, int]] = field(default_factory=list)  # x_1..x_k, x_q as [start, end)
    query_text: str = ""

    @property
    def k(self) -> int:
        return len(self.demo_labels)

    @property
    def n_tokens(self) -> int:
        return len(self.ids)


def label_token_ids(ds: ICLDataset, tokenizer: Any) -> list[int]:
    """The first token of " label" for each label; the label-space prediction compares these."""
    ids = []
    for label in ds.labels:
        toks = tokenizer(" " + label, add_special_tokens=False)["input_ids"]
        if not toks:
            raise ValueError(f"label {label!r} tokenises to nothing")
        ids.append(int(toks[0]))
    if len(set(ids)) != len(ids):
        raise ValueError(f"labels {ds.labels} share a first token ({ids}); choose labels that start differently")
    return ids


def _compose(ds: ICLDataset, demos: list[tuple[str, int]], query: str) -> tuple[str, dict[str, list]]:
    """The prompt text and character anchors of each role."""
    parts: list[str] = []
    pos = 0
    anchors: dict[str, list] = {"forerunner": [], "label": [], "text": []}

    def put(s: str) -> int:
        nonlocal pos
        start = pos
        parts.append(s)
        pos += len(s)
        return start

    for text, label in [*demos, (query, None)]:
        put(ds.input_prefix + " ")
        start = put(text)
        anchors["text"].append((start, start + len(text)))
        put("\n")
        start = put(ds.label_prefix)
        anchors["forerunner"].append(start + len(ds.label_prefix) - 1)
        if label is not None:
            start = put(" " + ds.labels[label])
            anchors["label"].append(start + 1)  # the label's first letter (its token carries the space)
            put("\n\n")
    return "".join(parts), anchors


def _char_to_token(tokenizer: Any, text: str) -> tuple[list[int], Any]:
    """Token ids and a function from a character index to the token that covers it."""
    try:
        enc = tokenizer(text, return_offsets_mapping=True)
        offsets = enc["offset_mapping"]
    except (NotImplementedError, TypeError, KeyError, ValueError):
        offsets = None
    ids = list(tokenizer(text)["input_ids"])
    if offsets is not None:
        def find(c: int) -> int:
            for i, (a, b) in enumerate(offsets):
                if a <= c < b:
                    return i
            raise ValueError(f"no token covers character {c} ({text[c]!r}) of the prompt")
        return ids, find

    def by_prefix(c: int) -> int:  # tokenizers without offsets: the token count of the prefix ending at c
        return len(tokenizer(text[: c + 1])["input_ids"]) - 1
    return ids, by_prefix


def make_prompt(ds: ICLDataset, tokenizer: Any, demos: list[tuple[str, int]], query: tuple[str, int]) -> Prompt:
    """Tokenise one prompt and locate s_i, y_i, x_i and s_q."""
    text, anchors = _compose(ds, demos, query[0])
    ids, find = _char_to_token(tokenizer, text)
    fore = [find(c) for c in anchors["forerunner"]]
    labels = [find(c) for c in anchors["label"]]
    spans = []
    for a, b in anchors["text"]:
        start, end = find(a), find(b - 1) + 1
        spans.append((start, end))
    if fore[-1] != len(ids) - 1:
        raise ValueError(f"the query's forerunner is token {fore[-1]}, not the last token ({len(ids) - 1}); "
                         f"the tokenizer merges the end of {ds.label_prefix!r} with nothing after it?")
    for s, y in zip(fore[:-1], labels, strict=True):
        if y != s + 1:
            raise ValueError(f"label token at {y} does not follow its forerunner at {s}: the tokenizer merges "
                             f"{ds.label_prefix!r} with the label; the token roles of Cho et al. need them apart")
    return Prompt(text, ids, query[1], [lab for _, lab in demos], fore, labels, spans, query[0])


def build_prompts(ds: ICLDataset, tokenizer: Any, *, k: int, n: int, seed: int = 0) -> list[Prompt]:
    """``n`` prompts with ``k`` demonstrations each.

    The queries are the first ``n`` items of a seeded shuffle (the same for every k, so accuracy
    by k compares the same queries); each query's demonstrations are drawn at random, without
    replacement, from the other items (StaICC draws them the same way, unbalanced).
    """
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    if n < 1 or n + k > len(ds.items):
        raise ValueError(f"need 1 <= n and n + k <= {len(ds.items)} items; got n={n}, k={k}")
    order = list(range(len(ds.items)))
    random.Random(seed).shuffle(order)
    queries, pool = order[:n], order[n:]
    out = []
    for i, q in enumerate(queries):
        rng = random.Random(seed * 1_000_003 + 7919 * k + i)
        demos = [ds.items[j] for j in rng.sample(pool, k)]
        out.append(make_prompt(ds, tokenizer, demos, ds.items[q]))
    return out


def pad_batch(prompts: list[Prompt], pad_id: int) -> tuple[dict[str, torch.Tensor], list[int]]:
    """Left-padded ``input_ids`` / ``attention_mask`` and each prompt's offset (its padding length)."""
    ids, mask = left_pad([list(p.ids) for p in prompts], pad_id)
    return {"input_ids": ids, "attention_mask": mask}, [ids.shape[1] - p.n_tokens for p in prompts]
