"""The head scores a scan can compute, by name, and the scan's default settings (kept free of
heavy imports: the CLI reads them to build its options).

>>> "induction" in SCORES, SCAN_DEFAULTS["lengths"]
(True, (25, 50, 100))
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from importlib import resources
from typing import Any

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
