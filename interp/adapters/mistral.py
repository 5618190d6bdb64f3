"""Mistral: the Llama layout; sliding-window attention comes from the config."""

from interp.adapters import Adapter

ADAPTER = Adapter(model_types=("mistral",))
