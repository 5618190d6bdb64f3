"""Our attention function: the model's own implementation, with q/k/v exposed to hooks.

Transformers dispatches attention by name through ``AttentionInterface``. We register
``interp_<base>`` for each base implementation: it hands the post-rotary query, key and value
to the hooks of a trace (which may read or replace them) and then calls the base function
unchanged, so a model keeps its fast path (SDPA) and, with no hooks, computes exactly what it
computed before. The same name must be registered with ``AttentionMaskInterface`` too, or
sliding-window layers silently get the wrong mask.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from transformers import AttentionInterface
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

PREFIX = "interp_"
BASES = ("sdpa", "eager")

# (layer, q, k, v, spec) -> (q, k, v); q is [batch, q_heads, pos, d], k and v [batch, kv_heads, pos_k, d].
QKVHook = Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor, "AttentionSpec"], tuple]


@dataclass(frozen=True)
class AttentionSpec:
    """How one layer turns q and k into probabilities, as the model passed it to attention."""

    scaling: float
    n_heads: int
    n_kv_heads: int
    sliding_window: int | None = None
    softcap: float | None = None

    @property
    def group(self) -> int:
        """Query heads per kv head (1: MHA; n_heads: MQA)."""
        return self.n_heads // self.n_kv_heads


def _base_function(base: str, module: torch.nn.Module) -> Callable:
    if base == "eager":
        # Each modeling file has its own eager function (Gemma's adds soft-capping).
        return sys.modules[type(module).__module__].eager_attention_forward
    return ALL_ATTENTION_FUNCTIONS[base]


def _make(base: str) -> Callable:
    def attention(module, query, key, value, attention_mask, **kwargs):
        hooks = module.__dict__.get("_interp_hooks")
        if hooks:
            scaling = kwargs.get("scaling")
            spec = AttentionSpec(
                scaling=float(scaling if scaling is not None else query.shape[-1] ** -0.5),
                n_heads=query.shape[1],
                n_kv_heads=key.shape[1],
                sliding_window=kwargs.get("sliding_window"),
                softcap=kwargs.get("softcap"),
            )
            for hook in list(hooks):
                query, key, value = hook(module.__dict__["_interp_layer"], query, key, value, spec)
        return _base_function(base, module)(module, query, key, value, attention_mask, **kwargs)

    attention.__name__ = f"{PREFIX}{base}"
    return attention


def _register() -> None:
    for base in BASES:
        AttentionInterface.register(PREFIX + base, _make(base))
        AttentionMaskInterface.register(PREFIX + base, ALL_MASK_ATTENTION_FUNCTIONS[base])


_register()


def install(hf_model: Any, attention_modules: list[torch.nn.Module]) -> None:
    """Switch a model to our wrapper around its current implementation and tag its layers."""
    current = hf_model.config._attn_implementation or "sdpa"
    base = current.removeprefix(PREFIX)
    if base not in BASES:
        # flash/flex kernels need a GPU build; SDPA computes the same function.
        base = "sdpa"
    if current != PREFIX + base:
        hf_model.set_attn_implementation(PREFIX + base)
    for layer, module in enumerate(attention_modules):
        module.__dict__["_interp_layer"] = layer
        hooks_of(module)


def hooks_of(module: torch.nn.Module) -> list[QKVHook]:
    """The q/k/v hooks currently attached to an attention module (kept in its __dict__)."""
    return module.__dict__.setdefault("_interp_hooks", [])


def base_implementation(hf_model: Any) -> str:
    """The implementation our wrapper calls (``sdpa`` or ``eager``)."""
    return str(hf_model.config._attn_implementation).removeprefix(PREFIX)
