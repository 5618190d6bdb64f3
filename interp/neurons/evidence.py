"""Evidence beyond the weights: does a neuron fire more on text about its concept?

Each prompt is reduced to one number per neuron, the ``max`` (default) or ``mean`` of the
site's value over the prompt's positions. Max over positions needs no knowledge of where
the concept is (a neuron may fire on the concept token, before it, or after it); the first
token is left out by default because many models put outlier activations there (the
attention sink) regardless of content. Concept and control prompts are compared by Cohen's
d (difference of means over the pooled standard deviation).

``interp/data/concepts.json`` ships hand-written matched prompt sets: each control sentence
follows its concept sentence with the concept swapped for something else of the same kind.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from importlib import resources
from typing import Any

import numpy as np
import pandas as pd
import torch

from interp.core.sites import as_glob, layer_of
from interp.errors import BadInputError, InterpError, UnknownNameError
from interp.neurons.vectors import check_neuron

SITES = ("blocks.*.mlp.hook_post", "blocks.*.mlp.hook_pre", "blocks.*.mlp.hook_pre_linear")
STATS = ("max", "mean")


def _shipped() -> dict[str, Any]:
    return json.loads(resources.files("interp.data").joinpath("concepts.json").read_text(encoding="utf-8"))


def load_concepts() -> dict[str, dict[str, Any]]:
    """The shipped concept sets: name -> ``{"words", "prompts", "controls"}``.

    Returns:
        A dict of every shipped set by name.
    """
    return {k: v for k, v in _shipped().items() if not k.startswith("_")}


def neutral_prompts() -> list[str]:
    """Shipped prompts about nothing in particular, for steering.

    Returns:
        A list of prompts.
    """
    return list(_shipped()["_neutral"])


def concept_set(name: str) -> dict[str, Any]:
    """One shipped concept set by name (``"dog"``, ``"paris"``, ``"three"``, ...).

    Returns:
        A dict with ``words``, ``prompts`` and ``controls``.
    """
    sets = load_concepts()
    if name not in sets:
        raise UnknownNameError("concept set", name, sorted(sets))
    return sets[name]


def _reducer(mask: torch.Tensor, stat: str, skip_first: bool):
    valid = mask.bool()
    if skip_first:
        first = torch.zeros_like(valid)
        first[torch.arange(len(valid)), valid.int().argmax(1)] = True
        rest = valid & ~first
        valid = torch.where(rest.any(1, keepdim=True), rest, valid)  # one-token prompts keep their token
    keep = valid[..., None]

    def reduce(x: torch.Tensor) -> torch.Tensor:  # [batch, pos, d_mlp] -> [batch, d_mlp]
        x = x.detach().float()
        m = keep.to(x.device)
        if stat == "max":
            return x.masked_fill(~m, float("-inf")).amax(1).cpu()
        return ((x * m).sum(1) / m.sum(1)).cpu()

    return reduce


def neuron_activations(
    model: Any,
    prompts: Sequence[str],
    layers: Sequence[int] | None = None,
    *,
    site: str = "blocks.*.mlp.hook_post",
    stat: str = "max",
    skip_first: bool = True,
    batch_size: int = 16,
) -> torch.Tensor:
    """``[prompts, layers, d_mlp]``: each prompt's ``stat`` over positions of every neuron.

    ``site``: one of ``SITES`` (a glob over the layers, or a short name like ``post``); which
    layers is ``layers``'s choice.

    Args:
        model: the model (an ``interp.Model``)
        skip_first: leave the first position out.
        batch_size: prompts per forward pass.

    Returns:
        A float tensor ``[prompts, layers, d_mlp]``.
    """
    site = _neuron_site(site)
    if stat not in STATS:
        raise UnknownNameError("stat", stat, STATS)
    if isinstance(prompts, str) or not prompts:
        raise InterpError("prompts must be a non-empty list of strings")
    chosen = list(range(model.cfg.n_layers)) if layers is None else [model.check_layer(int(x)) for x in layers]
    out = []
    for start in range(0, len(prompts), batch_size):
        tokens = model.to_tokens(list(prompts[start : start + batch_size]))
        fn = _reducer(tokens["attention_mask"], stat, skip_first)
        names = [site.replace("*", str(layer)) for layer in chosen]
        with model.trace(tokens, reduce=dict.fromkeys(names, fn)) as tr:
            out.append(torch.stack([tr[n] for n in names], dim=1))
    return torch.cat(out)


def _neuron_site(site: str) -> str:
    glob = as_glob(site)
    if glob not in SITES:
        raise UnknownNameError("neuron site", site, SITES)
    if glob != site and layer_of(site) is not None:
        raise BadInputError(f"site={site!r} names one layer; give the site in every layer ({glob!r}) and choose "
                            "layers with layers= (or the neuron's layer)")
    return glob


def cohens_d(a: np.ndarray, b: np.ndarray, axis: int = 0) -> np.ndarray:
    """``(mean a - mean b) / pooled sd`` (sample variances); 0 where both sets are constant and equal.

    Args:
        axis: the axis of the samples.

    Returns:
        The effect sizes, an array (the other axes kept).
    """
    na, nb = a.shape[axis], b.shape[axis]
    if na < 2 or nb < 2:
        raise InterpError("Cohen's d needs at least two prompts in each set")
    diff = a.mean(axis) - b.mean(axis)
    pooled = np.sqrt(((na - 1) * a.var(axis, ddof=1) + (nb - 1) * b.var(axis, ddof=1)) / (na + nb - 2))
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(pooled > 0, diff / pooled, np.where(diff == 0, 0.0, np.sign(diff) * np.inf))


@dataclass
class Evidence:
    """One neuron on concept vs control prompts.

    Attributes:
        layer: the neuron's layer.
        site: the site read.
        stat: the reduction over positions (``max`` or ``mean``).
        concept_mean: mean activation on the concept prompts.
        control_mean: mean activation on the controls.
        cohens_d: Cohen's d of the two sets.
        concept_values: the activation on each concept prompt.
        control_values: the activation on each control.
    """

    layer: int
    neuron: int
    site: str
    stat: str
    concept_mean: float
    control_mean: float
    cohens_d: float
    concept_values: list[float] = field(repr=False)
    control_values: list[float] = field(repr=False)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def activation_evidence(
    model: Any,
    layer: int,
    neuron: int,
    concept_prompts: Sequence[str],
    control_prompts: Sequence[str],
    *,
    site: str = "blocks.*.mlp.hook_post",
    stat: str = "max",
    skip_first: bool = True,
) -> Evidence:
    """The neuron's activation on prompts about the concept vs matched controls.

    Args:
        layer: the neuron's layer.
        concept_prompts: prompts that mention the concept.
        control_prompts: matched prompts that do not.
        site: the site read (default: the MLP's post-activation, the value the down projection reads).
        stat: ``max`` or ``mean`` over each prompt's positions.
        skip_first: leave the first position out.

    Returns:
        An ``Evidence``: both means, Cohen's d and every value.

    >>> import interp, interp.neurons
    >>> model = interp.load("smollm2-135m")                                       # doctest: +SKIP
    >>> s = interp.neurons.concept_set("dog")
    >>> interp.neurons.activation_evidence(model, 12, 345, s["prompts"], s["controls"])  # doctest: +SKIP
    """
    check_neuron(model, layer, neuron)
    kw = dict(site=site, stat=stat, skip_first=skip_first)
    a = neuron_activations(model, concept_prompts, [layer], **kw)[:, 0, neuron].numpy()  # type: ignore[arg-type]
    b = neuron_activations(model, control_prompts, [layer], **kw)[:, 0, neuron].numpy()  # type: ignore[arg-type]
    return Evidence(layer, neuron, _neuron_site(site).replace("*", str(layer)), stat, float(a.mean()), float(b.mean()), float(cohens_d(a, b)),
                    a.tolist(), b.tolist())


def activation_scan(
    model: Any,
    concept_prompts: Sequence[str],
    control_prompts: Sequence[str],
    *,
    site: str = "blocks.*.mlp.hook_post",
    stat: str = "max",
    skip_first: bool = True,
) -> pd.DataFrame:
    """Every neuron's evidence at once: ``layer, neuron, concept_mean, control_mean, cohens_d``,
    sorted by ``cohens_d`` (largest first). Reductions run as the values pass, so only
    ``[prompts, layers, d_mlp]`` numbers are kept.

    Args:
        model: the model (an ``interp.Model``)
        concept_prompts: prompts that mention the concept.
        control_prompts: matched prompts that do not.
        site: the site read.
        stat: ``max`` or ``mean`` over each prompt's positions.
        skip_first: leave the first position out.

    Returns:
        A pandas DataFrame, one row per neuron.
    """
    kw = dict(site=site, stat=stat, skip_first=skip_first)
    a = neuron_activations(model, concept_prompts, **kw).numpy()  # type: ignore[arg-type]
    b = neuron_activations(model, control_prompts, **kw).numpy()  # type: ignore[arg-type]
    n_layers, d_mlp = a.shape[1:]
    df = pd.DataFrame({
        "layer": np.repeat(np.arange(n_layers), d_mlp),
        "neuron": np.tile(np.arange(d_mlp), n_layers),
        "concept_mean": a.mean(0).ravel(),
        "control_mean": b.mean(0).ravel(),
        "cohens_d": cohens_d(a, b).ravel(),
    })
    return df.sort_values("cohens_d", ascending=False, kind="stable").reset_index(drop=True)
