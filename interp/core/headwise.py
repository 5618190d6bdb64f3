"""A key/value cache that keeps some kv heads whole and gives every other kv head a sink + window.

transformers' caches hold one ``[batch, kv_heads, seq, dim]`` tensor per layer, so every head of
a layer has the same length. ``HeadwiseLayer`` stores a layer in two parts: the kv heads in
``full`` keep every key and value (``keys``/``values``, ``[batch, n_full, seq, dim]``), the others
only their first ``sink`` real keys (per row: left padding shifts them) and their last
``window - 1`` keys (the next query makes ``window``, as a sliding window counts the query
itself), so a streaming head's memory stays constant however long the prompt.

A cache layer's ``update`` cannot attend: it does not see the query or the mask. So ``update``
returns the new keys and values unchanged, tagged with the layer (``SPLIT_KEY``), and interp's
attention function (``interp.core.attention``) hands them to ``HeadwiseLayer.attend``, which runs
the model's own attention function twice: the full heads' query heads over every key under the
model's mask, the streaming heads' query heads over their kept keys under the mask those keys
keep, and then stores the new keys. The keys a streaming head attends to are exactly those
``interp.heads.compressed`` leaves visible (the row's first ``sink`` real keys and the keys less
than ``window`` positions back, each at most once), so both compute the same function.

Prefill in chunks (``generate(..., prefill_chunk_size=n)``) never holds more than a chunk of a
streaming head's keys, so the peak memory falls with the cache, not only the final cache.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from transformers.cache_utils import DynamicCache, DynamicLayer

from interp.core.masks import as_mask, layer_visible
from interp.errors import UsageError

SPLIT_KEY = "_interp_headwise"  # the attribute of the key tensor a HeadwiseLayer's update returns


class HeadwiseLayer(DynamicLayer):
    """One attention layer's cache: the kv heads in ``full`` keep everything, the others their
    first ``sink`` real keys and their last ``window - 1`` keys."""

    is_sliding = False
    is_croppable = False

    def __init__(self, full: Sequence[bool], group: int, sink: int, window: int):
        super().__init__()
        full = [bool(f) for f in full]
        self.full_kv = torch.tensor([h for h, f in enumerate(full) if f], dtype=torch.long)
        self.stream_kv = torch.tensor([h for h, f in enumerate(full) if not f], dtype=torch.long)
        self.full_q = torch.tensor([h for h in range(len(full) * group) if full[h // group]], dtype=torch.long)
        self.stream_q = torch.tensor([h for h in range(len(full) * group) if not full[h // group]], dtype=torch.long)
        self.sink, self.window = sink, window
        self.cumulative_length = 0
        self.pending: int | None = None  # the start position of keys update() passed on, not yet stored

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        b, _, _, d = key_states.shape
        dv = value_states.shape[-1]
        dev, kd, vd = key_states.device, key_states.dtype, value_states.dtype
        nf, ns = len(self.full_kv), len(self.stream_kv)
        self.device = dev
        self.keys = torch.zeros(b, nf, 0, d, dtype=kd, device=dev)
        self.values = torch.zeros(b, nf, 0, dv, dtype=vd, device=dev)
        self.sink_keys = torch.zeros(b, ns, self.sink, d, dtype=kd, device=dev)
        self.sink_values = torch.zeros(b, ns, self.sink, dv, dtype=vd, device=dev)
        self.sink_pos = torch.full((b, self.sink), -1, dtype=torch.long, device=dev)  # -1: not filled yet
        self.recent_keys = torch.zeros(b, ns, 0, d, dtype=kd, device=dev)
        self.recent_values = torch.zeros(b, ns, 0, dv, dtype=vd, device=dev)
        self.recent_pos = torch.zeros(0, dtype=torch.long, device=dev)  # absolute positions, the same for every row
        self.full_kv, self.stream_kv = self.full_kv.to(dev), self.stream_kv.to(dev)
        self.full_q, self.stream_q = self.full_q.to(dev), self.stream_q.to(dev)
        self.is_initialized = True

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any,
               **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        if self.pending is not None:
            raise UsageError(
                "a head-wise KV cache was updated twice without attending in between: the model's attention "
                "implementation is not interp's (interp_sdpa or interp_eager), which alone can read this cache. Load "
                "the model with interp.load / interp.Model and do not change its attn_implementation")
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        self.pending = self.cumulative_length
        self.cumulative_length += key_states.shape[-2]
        setattr(key_states, SPLIT_KEY, self)
        return key_states, value_states

    def get_mask_sizes(self, query_length: int | torch.Tensor) -> tuple[int, int]:
        # The mask covers every position: the full heads read all of it, the streaming heads the
        # columns of the keys they kept. (transformers before 5.3 passes the cache positions.)
        n = query_length.shape[0] if isinstance(query_length, torch.Tensor) else query_length
        return self.cumulative_length + n, 0

    def get_seq_length(self) -> int:
        return self.cumulative_length

    def get_max_length(self) -> int:
        return -1

    get_max_cache_shape = get_max_length  # its name before transformers 5.3

    def reset(self) -> None:
        super().reset()
        self.cumulative_length, self.pending = 0, None

    def crop(self, tokens_to_remove: int) -> None:
        raise UsageError("a head-wise KV cache cannot be cropped: its streaming heads have dropped their old keys")

    def _tensors(self) -> list[str]:
        return ["keys", "values", "sink_keys", "sink_values", "sink_pos", "recent_keys", "recent_values"]

    def batch_repeat_interleave(self, repeats: int) -> None:
        if self.is_initialized:
            for name in self._tensors():
                setattr(self, name, getattr(self, name).repeat_interleave(repeats, dim=0))

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        if self.is_initialized:
            for name in self._tensors():
                setattr(self, name, getattr(self, name)[indices, ...])

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        if self.is_initialized:
            for name in self._tensors():
                t = getattr(self, name)
                setattr(self, name, t.index_select(0, beam_idx.to(t.device)))

    def nbytes(self) -> int:
        """Bytes of the keys and values this layer holds (positions not counted)."""
        if not self.is_initialized:
            return 0
        return sum(getattr(self, n).nbytes for n in self._tensors() if n != "sink_pos")

    def attend(self, base: Callable, eager: bool, module: torch.nn.Module, query: torch.Tensor,
               key: torch.Tensor, value: torch.Tensor, mask: Any, **kwargs: Any) -> tuple[torch.Tensor, None]:
        """The attention output ``[batch, pos, heads, dim]`` of ``query`` over this layer's kept
        keys plus the new ``key``/``value`` (which are then stored); ``base`` is the model's own
        attention function, ``eager`` whether it adds the mask to the scores."""
        if self.pending is None:
            raise UsageError("HeadwiseLayer.attend without a matching update (the cache's forward order was broken)")
        start, self.pending = self.pending, None
        b, _, n, _ = query.shape
        total = start + n
        dev = key.device
        vis = layer_visible(mask, n, total, device=dev)[:, 0].expand(b, n, total)  # [b, q, k]: causal, padding
        last = vis[:, -1]  # the last query sees every real key (no window on these layers)
        # A row with no real key yet (a chunk of left padding) has no sinks yet.
        first = torch.where(last.any(-1), last.float().argmax(-1), torch.full_like(last[:, 0], total, dtype=torch.long))
        q_abs = torch.arange(start, total, device=dev)

        def in_sinks(pos: torch.Tensor) -> torch.Tensor:  # pos [b, m] -> [b, m]
            return (pos >= first[:, None]) & (pos < first[:, None] + self.sink)

        def vis_at(pos: torch.Tensor) -> torch.Tensor:  # pos [b, m] -> [b, q, m]
            return vis.gather(2, pos.clamp(min=0)[:, None, :].expand(b, n, pos.shape[1]))

        out = query.new_empty(b, n, query.shape[1], value.shape[-1])
        if len(self.full_kv):
            assert self.keys is not None and self.values is not None
            self.keys = torch.cat([self.keys, key[:, self.full_kv]], dim=-2)
            self.values = torch.cat([self.values, value[:, self.full_kv]], dim=-2)
            out_full = base(module, query[:, self.full_q], self.keys, self.values, mask, **kwargs)[0]
            out[:, :, self.full_q] = out_full.to(out.dtype)
        ks, vs = key[:, self.stream_kv], value[:, self.stream_kv]
        sink_pos = self.sink_pos
        recent_pos = self.recent_pos[None].expand(b, -1)
        new_pos = q_abs[None].expand(b, n)
        recent = q_abs[:, None] - recent_pos[:, None, :] < self.window  # [b, q, m]
        # Each kept key once: a sink slot holds a key of the row's sink range, the window the others.
        sees_sink = (sink_pos >= 0)[:, None] & in_sinks(sink_pos)[:, None] & vis_at(sink_pos)
        sees_recent = vis_at(recent_pos) & recent & ~in_sinks(recent_pos)[:, None]
        sees_new = vis[:, :, start:] & ((q_abs[:, None] - q_abs[None, :] < self.window)[None] | in_sinks(new_pos)[:, None])
        stream_mask = torch.cat([sees_sink, sees_recent, sees_new], dim=-1)[:, None]
        k_all = torch.cat([self.sink_keys, self.recent_keys, ks], dim=-2)
        v_all = torch.cat([self.sink_values, self.recent_values, vs], dim=-2)
        m = as_mask(stream_mask, query.dtype) if eager else stream_mask
        out_stream = base(module, query[:, self.stream_q], k_all, v_all, m, **kwargs)[0]
        out[:, :, self.stream_q] = out_stream.to(out.dtype)
        # Store: the sink slots take the row's sink keys that arrived now, the window the last keys.
        target = first[:, None] + torch.arange(self.sink, device=dev)  # [b, sink]
        here = (target >= start) & (target < total)
        idx = (target - start).clamp(0, n - 1)
        gk = ks.gather(2, idx[:, None, :, None].expand(-1, ks.shape[1], -1, ks.shape[-1]))
        gv = vs.gather(2, idx[:, None, :, None].expand(-1, vs.shape[1], -1, vs.shape[-1]))
        self.sink_keys = torch.where(here[:, None, :, None], gk, self.sink_keys)
        self.sink_values = torch.where(here[:, None, :, None], gv, self.sink_values)
        self.sink_pos = torch.where(here, target, self.sink_pos)
        keep = self.window - 1
        # clone: a slice would keep the whole concatenation (a prefill chunk) alive
        self.recent_keys = torch.cat([self.recent_keys, ks], dim=-2)[:, :, max(0, self.recent_keys.shape[2] + n - keep):].clone()
        self.recent_values = torch.cat([self.recent_values, vs], dim=-2)[:, :, max(0, self.recent_values.shape[2] + n - keep):].clone()
        self.recent_pos = torch.cat([self.recent_pos, q_abs])[max(0, self.recent_pos.shape[0] + n - keep):].clone()
        return out, None


class HeadwiseCache(DynamicCache):
    """A ``DynamicCache`` whose unbounded attention layers are ``HeadwiseLayer``s where some kv
    head streams (``full[layer]``: bool per kv head); sliding-window layers keep transformers' own
    sliding cache, layers with every kv head full a plain ``DynamicLayer``."""

    def __init__(self, config: Any, full: Sequence[Sequence[bool]], group: int, sink: int, window: int,
                 bounded: Sequence[int] = ()):
        super().__init__(config=config)
        if len(self.layers) != len(full):  # a config without layer types: one DynamicLayer each
            self.layers = [DynamicLayer() for _ in full]
            self.layer_class_to_replicate = None
        for layer, heads in enumerate(full):
            if layer in bounded or all(heads) or type(self.layers[layer]) is not DynamicLayer:
                continue
            self.layers[layer] = HeadwiseLayer(heads, group, sink, window)
        self.sink, self.window = sink, window

    def nbytes(self) -> int:
        """Bytes of keys and values held now, every layer."""
        total = 0
        for layer in self.layers:
            if isinstance(layer, HeadwiseLayer):
                total += layer.nbytes()
            elif isinstance(layer, DynamicLayer) and layer.is_initialized and layer.keys is not None:
                assert layer.values is not None
                total += layer.keys.nbytes + layer.values.nbytes
        return total

    def crop(self, tokens_to_remove: int) -> None:
        raise UsageError("a head-wise KV cache cannot be cropped: its streaming heads have dropped their old keys")
