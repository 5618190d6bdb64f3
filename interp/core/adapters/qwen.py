"""Qwen2 (q/k/v biases) and Qwen3 (q/k norms): the Llama layout."""

from interp.core.adapters import Adapter

ADAPTER = Adapter(model_types=("qwen2", "qwen3"))
