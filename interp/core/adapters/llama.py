"""Llama family (Llama 2/3, SmolLM2): the default layout."""

from interp.core.adapters import Adapter

ADAPTER = Adapter(model_types=("llama",))
