"""The head scores a scan can compute, by name, the scan's default settings, and how a head is
labelled on screen (kept free of heavy imports: the CLI reads them to build its options).

A head is ``layer`` and ``head`` (columns, or ``{"layer": 3, "head": 5}`` records) in every table
and file; ``L3H5`` is its label for display, written by :func:`head_label` and read back by
:func:`parse_head_label`, the one place that knows the form.

>>> head_label(3, 5), parse_head_label("L3H5")
('L3H5', (3, 5))
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from importlib import resources
from typing import Any

from interp.errors import BadInputError

_HEAD_LABEL = re.compile(r"L(0|[1-9][0-9]*)H(0|[1-9][0-9]*)")


def head_label(layer: int, head: int) -> str:
    """A head's label for display: ``L3H5`` is head 5 of layer 3."""
    return f"L{layer}H{head}"


def parse_head_label(label: str) -> tuple[int, int]:
    """``(layer, head)`` of a label :func:`head_label` wrote; anything else: ``BadInputError``."""
    match = _HEAD_LABEL.fullmatch(label) if isinstance(label, str) else None
    if match is None:
        raise BadInputError(f"{label!r} is not a head label such as 'L3H5' (head 5 of layer 3)")
    return int(match[1]), int(match[2])


RANDOM_SCORES = ("prev_token", "duplicate", "induction")
TEXT_SCORES = ("prev_token_text", "duplicate_text", "induction_text", "ngram")
PATTERN_SCORES = (*RANDOM_SCORES, *TEXT_SCORES)
SCORES = (*PATTERN_SCORES, "streaming", "retrieval")
NGRAM_ORDERS = (1, 2, 3, 4)
# The order of scores in every table and report, whatever order the work was done or resumed in.
OUTPUT_ORDER = (*RANDOM_SCORES, *TEXT_SCORES[:3], *(f"ngram{n}" for n in NGRAM_ORDERS), "streaming", "retrieval")

# The defaults of ``scan``'s pattern protocols, written once: its signature and the CLI read them.
SCAN_DEFAULTS: dict[str, Any] = {"lengths": (25, 50, 100), "samples": 8, "text_tokens": 512, "text_samples": 4}

# The streaming score's defaults: DuoAttention's streaming cache (4 sinks, a 256-key window), on
# one window of natural text as long as the longest needle haystacks scored here (or the model's
# context window, if shorter).
STREAMING_DEFAULTS: dict[str, int] = {"sink": 4, "window": 256, "tokens": 2048, "samples": 1}


def default_needles() -> list[dict[str, str]]:
    """Three needle / question / answer triples that ship with the package."""
    return json.loads(resources.files("interp").joinpath("data", "needles.json").read_text())


@dataclass
class RetrievalSettings:
    lengths: tuple[int, ...] = (1000, 2000)
    depths: tuple[float, ...] = (0.0, 0.5, 1.0)  # 18 tests with the defaults: the default scan stays under 10 min on 2 CPU cores
    needles: list[dict[str, str]] = field(default_factory=default_needles)
    max_new_tokens: int = 24
    recall_threshold: float = 0.5
    threshold: float = 0.1
    mask_k: int = 10
    mask_seeds: tuple[int, ...] = (0, 1)
    haystack: str = "alice"

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["lengths"], d["depths"], d["mask_seeds"] = list(self.lengths), list(self.depths), list(self.mask_seeds)
        return d
