"""Clamp a neuron and watch the concept's probability and the generated text change.

The clamp holds the neuron's value where the down projection reads it (site
``blocks.{l}.mlp.hook_post``: ``act(gate) * up`` in gated MLPs, ``act(c_fc)`` in GPT-2) at a
fixed number on every position, also at each step of ``generate``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch

from interp.core.interventions import Index, set_value
from interp.errors import BadInputError, real_number
from interp.neurons.decoding import token_strings
from interp.neurons.find import concept_tokens, used_ids
from interp.neurons.vectors import check_neuron


def clamp(model: Any, layer: int, neuron: int, value: float, *, positions: Index = None) -> dict[str, Any]:
    """An ``interventions=`` dict holding one neuron's post-activation value at ``value``.

    The layer and neuron must be inside the model and ``value`` a finite number (else a clear
    error here); ``positions`` are checked against the input when a run installs it.

    Returns:
        A dict ``{site: intervention}`` to pass as ``interventions=``.

    >>> iv = interp.neurons.clamp(model, 12, 345, 8.0)                           # doctest: +SKIP
    >>> model.generate("My favourite animal is the", interventions=iv)           # doctest: +SKIP
    """
    check_neuron(model, layer, neuron)
    return {f"blocks.{layer}.mlp.hook_post": set_value(_number(value, "clamp"), units=[neuron], positions=positions)}


def _number(value: Any, what: str) -> float:
    """A clamp value: a finite real number."""
    return real_number(value, f"{what}: value")


@dataclass
class ClampEffect:
    """The concept's next-token probability and the generated text, without and with the clamp.

    Attributes:
        layer: the neuron's layer.
        neuron: its index in the layer.
        value: the value it was held at.
        prompt: the prompt.
        concept_tokens: the concept's tokens, as strings.
        p_base: their summed next-token probability without the clamp.
        p_clamped: the same with the clamp.
        text_base: the greedy continuation without the clamp.
        text_clamped: the same with the clamp.
    """

    layer: int
    neuron: int
    value: float
    prompt: str
    concept_tokens: list[str]
    p_base: float
    p_clamped: float
    text_base: str
    text_clamped: str

    @property
    def ratio(self) -> float:
        return self.p_clamped / self.p_base if self.p_base > 0 else float("inf")

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ratio": self.ratio}


def concept_prob(model: Any, prompt: str, ids: Sequence[int], interventions: dict[str, Any] | None = None) -> float:
    """Probability that the next token after ``prompt`` is one of ``ids`` (summed).

    Args:
        model: the model (an ``interp.Model``)
        interventions: interventions applied during the forward pass (e.g. ``clamp``).

    Returns:
        The summed probability, a float.
    """
    logits = model.run(prompt, interventions=interventions)[0, -1].float()
    return float(torch.softmax(logits, -1)[list(ids)].sum())


def clamp_effect(
    model: Any,
    layer: int,
    neuron: int,
    value: float,
    prompt: str,
    concept: str | Sequence[str],
    max_new_tokens: int = 20,
) -> ClampEffect:
    """Next-token probability of the concept (its tokens with and without a leading space,
    summed) and the greedy continuation, without and with ``clamp(model, layer, neuron, value)``.

    Args:
        prompt: the prompt to continue.
        max_new_tokens: tokens generated each way.

    Returns:
        A ``ClampEffect``.

    >>> r = interp.neurons.clamp_effect(model, 12, 345, 8.0, "My favourite animal is the", "dog")  # doctest: +SKIP
    >>> r.ratio, r.text_clamped                                                   # doctest: +SKIP
    """
    check_neuron(model, layer, neuron)
    value = _number(value, "clamp_effect")
    iv = clamp(model, layer, neuron, value)
    if not isinstance(prompt, str):
        raise BadInputError(f"clamp_effect: prompt must be a str, got {type(prompt).__name__}")
    model.check_generation(model.to_tokens(prompt), max_new_tokens, iv)  # every input, before any run
    table = concept_tokens(model, concept)
    ids = used_ids(table)
    names = token_strings(model.tokenizer, ids)
    return ClampEffect(
        layer=layer, neuron=neuron, value=float(value), prompt=prompt, concept_tokens=[names[i] for i in ids],
        p_base=concept_prob(model, prompt, ids), p_clamped=concept_prob(model, prompt, ids, iv),
        text_base=model.generate(prompt, max_new_tokens)[0],
        text_clamped=model.generate(prompt, max_new_tokens, interventions=iv)[0],
    )
