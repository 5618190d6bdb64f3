"""``Model``: a real Hugging Face causal LM, its tokenizer and its architecture adapter."""

from __future__ import annotations

from typing import Any


class Model:
    """Wraps a loaded HF causal LM and tokenizer; tracing and interventions hang off it.

    Build one with ``interp.load(...)``; ``Model(hf_model, tokenizer)`` wraps a model you
    already have.
    """

    def __init__(self, hf_model: Any, tokenizer: Any, *, name: str | None = None, source: str | None = None):
        self.hf = hf_model.eval()
        self.tokenizer = tokenizer
        self.name = name or getattr(hf_model.config, "_name_or_path", None) or type(hf_model).__name__
        self.source = source
