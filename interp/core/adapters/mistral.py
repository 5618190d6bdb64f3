"""Mistral: the Llama layout; sliding-window attention comes from the config."""

from interp.core.adapters import Adapter

ADAPTER = Adapter(model_types=("mistral",))
