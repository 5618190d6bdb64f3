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

from interp.errors import UsageError

PREFIX = "interp_"
BASES = ("sdpa", "eager")

# (layer, q, k, v, spec) -> (q, k, v); q is [batch, q_heads, pos, d], k and v [batch, kv_heads, pos_k, d].
QKVHook = Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor, "AttentionSpec"], tuple]
# (layer, q, k, spec, lse): sees the final q and k and, where the fused kernel ran, the rows'
# log-sum-exp [batch, q_heads, pos] (else None).
Observer = Callable[[int, torch.Tensor, torch.Tensor, "AttentionSpec", "torch.Tensor | None"], None]
# (module, mask or None, q, k) -> the mask the layer's attention gets instead: boolean (True:
# visible) or additive, [batch or 1, heads or 1, pos_q, pos_k]; None is the model's causal mask
# (plus its window). q and k as the attention function gets them, so pos_k counts cached keys.
MaskEdit = Callable[[torch.nn.Module, Any, torch.Tensor, torch.Tensor], Any]


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


def _spec(query: torch.Tensor, key: torch.Tensor, kwargs: dict) -> AttentionSpec:
    scaling = kwargs.get("scaling")
    return AttentionSpec(
        scaling=float(scaling if scaling is not None else query.shape[-1] ** -0.5),
        n_heads=query.shape[1],
        n_kv_heads=key.shape[1],
        sliding_window=kwargs.get("sliding_window"),
        softcap=kwargs.get("softcap"),
    )


def _fused_with_lse(base, module, query, key, value, attention_mask, spec):
    """SDPA's own CPU flash kernel, which also returns the rows' log-sum-exp at no extra cost.

    Only where it computes exactly what SDPA computes: causal, no mask tensor, no soft-cap, no
    window shorter than the sequence, no dropout. Returns None otherwise.
    """
    n = query.shape[2]
    plain = (
        base == "sdpa"
        and not query.is_cuda
        and attention_mask is None
        and key.shape[2] == n
        and spec.softcap is None
        and (spec.sliding_window is None or spec.sliding_window >= n)
        and not module.training
        and getattr(module, "is_causal", True)
    )
    if not plain:
        return None
    k = key.repeat_interleave(spec.group, dim=1) if spec.group > 1 else key
    v = value.repeat_interleave(spec.group, dim=1) if spec.group > 1 else value
    out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
        query, k, v, 0.0, True, scale=spec.scaling
    )
    return out.transpose(1, 2).contiguous(), lse


def _for_base(mask: Any, base: str, dtype: torch.dtype) -> Any:
    """An edited mask in the form ``base`` reads: SDPA takes a boolean or an additive mask, the
    eager functions add it to the scores (a boolean there would add 1 where visible)."""
    if base == "eager" and isinstance(mask, torch.Tensor) and mask.dtype == torch.bool:
        return torch.zeros((), dtype=dtype, device=mask.device).masked_fill(~mask, torch.finfo(dtype).min)
    return mask


def _make(base: str) -> Callable:
    def attention(module, query, key, value, attention_mask, **kwargs):
        hooks = module.__dict__.get("_interp_hooks")
        observers = module.__dict__.get("_interp_observers")
        edits = module.__dict__.get("_interp_mask_edits")
        if not hooks and not observers and not edits:
            return _base_function(base, module)(module, query, key, value, attention_mask, **kwargs)
        layer = module.__dict__["_interp_layer"]
        spec = _spec(query, key, kwargs)
        for hook in list(hooks or ()):
            query, key, value = hook(layer, query, key, value, spec)
        if edits:
            if observers:  # the statistics kernels apply the model's own mask, not an edited one
                raise UsageError(
                    f"layer {layer}'s attention mask is edited (a knockout or a compressed cache) while attention "
                    "statistics are observed there; the statistics would ignore the edit. Run them separately")
            for edit in list(edits):
                attention_mask = edit(module, attention_mask, query, key)
            attention_mask = _for_base(attention_mask, base, query.dtype)
        if not observers:
            return _base_function(base, module)(module, query, key, value, attention_mask, **kwargs)
        fused = _fused_with_lse(base, module, query, key, value, attention_mask, spec)
        if fused is None:
            result, lse = _base_function(base, module)(module, query, key, value, attention_mask, **kwargs), None
        else:
            out, lse = fused
            result = (out, None)  # what SDPA returns: output and no weights
        for observe in list(observers):
            observe(layer, query, key, spec, lse)
        return result

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
        observers_of(module)
        mask_edits_of(module)


def hooks_of(module: torch.nn.Module) -> list[QKVHook]:
    """The q/k/v hooks currently attached to an attention module (kept in its __dict__)."""
    return module.__dict__.setdefault("_interp_hooks", [])


def mask_edits_of(module: torch.nn.Module) -> list[MaskEdit]:
    """The attention-mask edits of an attention module, applied in order to the mask it gets."""
    return module.__dict__.setdefault("_interp_mask_edits", [])


def observers_of(module: torch.nn.Module) -> list[Observer]:
    """The observers of an attention module's final q, k and row log-sum-exp."""
    return module.__dict__.setdefault("_interp_observers", [])


def base_implementation(hf_model: Any) -> str:
    """The implementation our wrapper calls (``sdpa`` or ``eager``)."""
    return str(hf_model.config._attn_implementation).removeprefix(PREFIX)
