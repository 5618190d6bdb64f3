"""Our attention function: the model's own implementation, with q/k/v exposed to hooks.

Transformers dispatches attention by name through ``AttentionInterface``. We register
``interp_<base>`` for each base implementation: it hands the post-rotary query, key and value
to the hooks of a trace (which may read or replace them) and then calls the base function
unchanged, so a model keeps its fast path (SDPA) and, with no hooks, computes exactly what it
computed before. The same name must be registered with ``AttentionMaskInterface`` too, or
sliding-window layers silently get the wrong mask.

Under a head-wise KV cache (``interp.core.headwise``) the key and value a layer gets are only the
new ones, tagged with their cache layer: the function hands them (after the q/k/v hooks) to that
layer, which attends its full and its streaming kv heads separately with the base function.
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

from interp.core.headwise import SPLIT_KEY
from interp.core.masks import as_mask, layer_visible
from interp.errors import BadInputError, UsageError

PREFIX = "interp_"
BASES = ("sdpa", "eager")

# What interp keeps in an attention module's ``__dict__``: the layer's index (set by ``install``)
# and the lists a trace fills and empties (``hooks_of``, ``observers_of``, ``mask_edits_of``,
# ``mask_recorders_of``). Every reader and writer of these keys uses these names; ``untag``
# removes them all.
LAYER_KEY = "_interp_layer"
HOOKS_KEY, OBSERVERS_KEY = "_interp_hooks", "_interp_observers"
MASK_EDITS_KEY, MASK_RECORDERS_KEY = "_interp_mask_edits", "_interp_mask_recorders"
MODULE_KEYS = (LAYER_KEY, HOOKS_KEY, OBSERVERS_KEY, MASK_EDITS_KEY, MASK_RECORDERS_KEY)

# (layer, q, k, v, spec) -> (q, k, v); q is [batch, q_heads, pos, d], k and v [batch, kv_heads, pos_k, d].
QKVHook = Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor, "AttentionSpec"], tuple]
# (layer, q, k, spec, lse): sees the final q and k and, where the fused kernel ran, the rows'
# log-sum-exp [batch, q_heads, pos] (else None).
Observer = Callable[[int, torch.Tensor, torch.Tensor, "AttentionSpec", "torch.Tensor | None"], None]
# (module, mask or None, q, k) -> the mask the layer's attention gets instead: boolean (True:
# visible) or additive, [batch or 1, heads or 1, pos_q, pos_k]; None is the model's causal mask
# (plus its window). q and k as the attention function gets them, so pos_k counts cached keys.
# Every edit gets the model's own mask; where several are active on a layer, a key stays
# visible only if every edit keeps it (``combine_edits``).
MaskEdit = Callable[[torch.nn.Module, Any, torch.Tensor, torch.Tensor], Any]
# (layer, mask, q, k): sees the mask the layer's attention function gets, after every edit.
MaskRecorder = Callable[[int, Any, torch.Tensor, torch.Tensor], None]


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
        return as_mask(mask, dtype)
    return mask


def combine_edits(edits: list[MaskEdit], module: torch.nn.Module, mask: Any, query: torch.Tensor,
                  key: torch.Tensor, layer: int, sliding_window: int | None = None) -> Any:
    """The mask a layer gets under ``edits``: one edit's own result; for several, the keys every
    edit keeps (each edit is given the model's own ``mask``, so the order in which the edits were
    opened does not matter: a knockout inside ``compressed`` equals ``compressed`` inside a
    knockout, and nested ``compressed`` blocks keep what both keep).

    Exact or refused: an edit that makes visible a key the model's mask hides cannot be combined
    with another (``UsageError``), and edits that together leave a real query with no key raise
    ``BadInputError``. The result is boolean, or additive in the dtype of an additive model mask.
    ``sliding_window``: the layer's window, as its attention function gets it (for ``mask`` None).
    """
    if len(edits) == 1:
        return edits[0](module, mask, query, key)
    n_q, n_k = query.shape[2], key.shape[2]
    window = sliding_window if isinstance(sliding_window, int) else None
    own = layer_visible(mask, n_q, n_k, sliding_window=window, device=key.device)
    kept: torch.Tensor | None = None
    for edit in edits:
        out = edit(module, mask, query, key)
        seen = own if out is None else layer_visible(out, n_q, n_k, sliding_window=window, device=key.device)
        if bool((seen & ~own).any()):
            raise UsageError(
                f"layer {layer}'s attention has {len(edits)} mask edits open and one of them makes visible keys that "
                "the model's own mask hides (causal order, window or padding); such an edit cannot be combined "
                "exactly with another (each edit gets the model's mask and a key stays visible only where every "
                "edit keeps it). Run it in a block of its own, or write one mask edit that does both")
        kept = seen if kept is None else kept & seen
    assert kept is not None
    lost = own.any(-1) & ~kept.any(-1)
    if bool(lost.any()):
        item, head, row = (int(x) for x in lost.nonzero()[0])
        raise BadInputError(
            f"the {len(edits)} attention-mask edits open on layer {layer} (knockouts, compressed caches) together "
            f"leave query {row} of item {item} (head {head}) with no key to attend to; keep at least one key per "
            "row, e.g. block fewer edges or keep that head's cache full")
    return as_mask(kept, mask.dtype if isinstance(mask, torch.Tensor) else None)


def _make(base: str) -> Callable:
    def attention(module, query, key, value, attention_mask, **kwargs):
        hooks = module.__dict__.get(HOOKS_KEY)
        observers = module.__dict__.get(OBSERVERS_KEY)
        edits = module.__dict__.get(MASK_EDITS_KEY)
        recorders = module.__dict__.get(MASK_RECORDERS_KEY)
        split = getattr(key, SPLIT_KEY, None)  # a head-wise cache layer: key and value are the new ones only
        if split is not None:
            return _headwise(base, split, module, query, key, value, attention_mask, hooks, observers, edits, kwargs)
        if not hooks and not observers and not edits and not recorders:
            return _base_function(base, module)(module, query, key, value, attention_mask, **kwargs)
        layer = module.__dict__[LAYER_KEY]
        spec = _spec(query, key, kwargs)
        for hook in list(hooks or ()):
            query, key, value = hook(layer, query, key, value, spec)
        if edits:
            # The statistics kernels apply the model's own mask, not an edited one.
            if any(not getattr(fn, "ignores_mask", False) for fn in observers or ()):
                raise UsageError(
                    f"layer {layer}'s attention mask is edited (a knockout or a compressed cache) while attention "
                    "statistics are observed there; the statistics would ignore the edit. Run them separately")
            attention_mask = combine_edits(list(edits), module, attention_mask, query, key, layer, spec.sliding_window)
        for record in list(recorders or ()):
            record(layer, attention_mask, query, key)
        if edits:
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


def _headwise(base, split, module, query, key, value, attention_mask, hooks, observers, edits, kwargs):
    """Attention under a head-wise KV cache (``interp.core.headwise``): the q/k/v hooks see the
    query and the new keys and values (what the cache will store), and may replace them; masks
    cannot be edited and statistics cannot be observed, and the mask is not recorded (no
    ``attention_pattern``), since the streaming heads' keys are not the model's mask's columns."""
    if edits or observers:
        what = "mask edits (knockout, compressed)" if edits else "attention statistics"
        raise UsageError(
            f"layer {module.__dict__.get(LAYER_KEY)} runs with a head-wise KV cache, which cannot be combined with "
            f"{what}: its streaming heads hold only their sink and window keys. Run those without the cache "
            "(interp.heads.compressed computes the same attention through the mask)")
    if hooks:
        layer = module.__dict__[LAYER_KEY]
        spec = _spec(query, key, kwargs)
        for hook in list(hooks):
            query, key, value = hook(layer, query, key, value, spec)
    return split.attend(_base_function(base, module), base == "eager", module, query, key, value, attention_mask,
                        **kwargs)


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
        module.__dict__[LAYER_KEY] = layer
        hooks_of(module)
        observers_of(module)
        mask_edits_of(module)
        mask_recorders_of(module)


def hooks_of(module: torch.nn.Module) -> list[QKVHook]:
    """The q/k/v hooks currently attached to an attention module (kept in its __dict__)."""
    return module.__dict__.setdefault(HOOKS_KEY, [])


def mask_edits_of(module: torch.nn.Module) -> list[MaskEdit]:
    """The attention-mask edits of an attention module, applied in order to the mask it gets."""
    return module.__dict__.setdefault(MASK_EDITS_KEY, [])


def mask_recorders_of(module: torch.nn.Module) -> list[MaskRecorder]:
    """Functions that see the mask an attention module's attention function gets (after edits)."""
    return module.__dict__.setdefault(MASK_RECORDERS_KEY, [])


def observers_of(module: torch.nn.Module) -> list[Observer]:
    """The observers of an attention module's final q, k and row log-sum-exp."""
    return module.__dict__.setdefault(OBSERVERS_KEY, [])


def untag(module: torch.nn.Module) -> None:
    """Remove everything interp keeps in a module's ``__dict__`` (``MODULE_KEYS``), e.g. from a
    copy of a tagged module that must not share its hook lists."""
    for key in MODULE_KEYS:
        module.__dict__.pop(key, None)


def base_implementation(hf_model: Any) -> str:
    """The implementation our wrapper calls (``sdpa`` or ``eager``)."""
    return str(hf_model.config._attn_implementation).removeprefix(PREFIX)
