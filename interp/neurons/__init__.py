"""Feature neurons: decode every MLP neuron through the LM head, search by concept, clamp to steer.

After Davies (2025, arXiv 2501.02688): a neuron's up-projection row, multiplied by the
unembedding, names the tokens it is about; clamping the neuron's value steers generation
towards them.

>>> import interp, interp.neurons as neurons
>>> model = interp.load("smollm2-135m")                                         # doctest: +SKIP
>>> table = neurons.decode(model, k=10)              # every neuron: layer, neuron, rank, token, prob  # doctest: +SKIP
>>> hits = neurons.find(model, ["dog", "dogs"], top=10)                         # doctest: +SKIP
>>> s = neurons.concept_set("dog")                   # shipped matched prompts  # doctest: +SKIP
>>> neurons.activation_evidence(model, hits.layer[0], hits.neuron[0], s["prompts"], s["controls"])  # doctest: +SKIP
>>> neurons.clamp_effect(model, hits.layer[0], hits.neuron[0], 10.0, "I looked outside and saw a", "dog")  # doctest: +SKIP
"""

from interp.neurons.clamping import ClampEffect, clamp, clamp_effect, concept_prob
from interp.neurons.decoding import Agreement, agreement, decode
from interp.neurons.evidence import (
    Evidence,
    activation_evidence,
    activation_scan,
    cohens_d,
    concept_set,
    load_concepts,
    neuron_activations,
    neutral_prompts,
)
from interp.neurons.find import ConceptSplitWarning, concept_tokens, find
from interp.neurons.report import write_report
from interp.neurons.vectors import WEIGHTS, decoding_vectors, effective_gain, raw_vectors

__all__ = [
    "WEIGHTS",
    "Agreement",
    "ConceptSplitWarning",
    "Evidence",
    "ClampEffect",
    "activation_evidence",
    "activation_scan",
    "agreement",
    "clamp",
    "cohens_d",
    "concept_prob",
    "concept_set",
    "concept_tokens",
    "decode",
    "decoding_vectors",
    "effective_gain",
    "find",
    "load_concepts",
    "neuron_activations",
    "neutral_prompts",
    "raw_vectors",
    "clamp_effect",
    "write_report",
]
