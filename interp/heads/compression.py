"""Head-wise KV-cache compression, for evaluation: most kv heads keep only sinks and a window.

DuoAttention (Xiao et al., 2024) and RazorAttention (Tang et al., 2024) keep the full key/value
cache only for the heads that retrieve from far back (retrieval heads, Wu et al.) and give every
other kv head a *streaming* cache: its first ``sink`` keys (attention sinks) and its last
``window`` keys. ``compressed`` applies exactly that, during prefill and decoding, as an
attention-mask edit on the model's own fast path (``trace(mask_edits=...)``): a streaming kv
head's query heads cannot see the keys a streaming cache would have dropped, which is what
dropping them would compute. It measures what such a cache would do to a model; it saves no
memory (the dropped keys are still computed and stored).

Sliding-window layers (Gemma 3's local layers) are already bounded by their window and are left
as they are.

>>> import interp
>>> from interp.heads.compression import compressed
>>> model = interp.load("smollm2-135m")                                   # doctest: +SKIP
>>> keep = interp.heads.HeadScores.load("reports/smollm2").keep_full(
...     "retrieval", share=0.25, model=model)                            # doctest: +SKIP
>>> with compressed(model, keep_full=keep, sink=4, window=256) as c:     # doctest: +SKIP
...     text = model.generate(long_prompt, max_new_tokens=20)
>>> c.kept_fraction()                                                    # doctest: +SKIP
0.31
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from interp.core.masks import layer_visible, visible
from interp.core.model import Model
from interp.errors import BadInputError, whole_number

SINK, WINDOW = 4, 256  # DuoAttention's defaults for its streaming heads (StreamingLLM's sink of 4)


def sliding_windows(model: Model) -> dict[int, int]:
    """``{layer: window}`` for the layers whose attention is already bounded by a sliding window
    (Gemma 3's local layers, Qwen2's sliding layers, Mistral with a window)."""
    return {layer: window for layer in range(model.cfg.n_layers) if (window := model.sliding_window(layer)) is not None}


def check_keep_full(model: Model, keep_full: Any) -> np.ndarray:
    """``keep_full`` as a bool ``[layers, kv_heads]`` array, or a clear error."""
    shape = (model.cfg.n_layers, model.cfg.n_kv_heads)
    try:
        keep = np.asarray(keep_full)
    except Exception as exc:  # ragged lists and the like
        raise BadInputError(f"keep_full must be a bool array of shape {shape} (layers x kv heads): {exc}") from exc
    if keep.shape != shape or keep.dtype != np.bool_:
        raise BadInputError(f"keep_full must be a bool array of shape {shape} (layers x kv heads) for {model.name}, "
                            f"got {keep.dtype} {keep.shape}; HeadScores.keep_full(score, share, model=model) makes one")
    return keep


@dataclass
class Compression:
    """The cache a ``compressed`` block applies, and the most keys its runs attended over."""

    keep_full: np.ndarray  # [layers, kv_heads]: True keeps the full cache
    sink: int
    window: int
    bounded: dict[int, int]  # sliding-window layers: their window
    keys_seen: int = field(default=0)

    @property
    def streaming_heads(self) -> int:
        """kv heads given a sink + window cache (sliding-window layers not counted)."""
        free = [la for la in range(self.keep_full.shape[0]) if la not in self.bounded]
        return int((~self.keep_full[free]).sum())

    def kept_fraction(self, n_tokens: int | None = None) -> float:
        """The share of a full cache's keys (all layers and kv heads) this cache keeps, for a
        sequence of ``n_tokens`` (default: the longest one run in the block). Sliding-window
        layers keep their window, as they do without compression."""
        n = self.keys_seen if n_tokens is None else whole_number(n_tokens, 1, "n_tokens")
        if n <= 0:
            raise BadInputError("no forward ran in the compressed block yet; pass n_tokens")
        layers, kv = self.keep_full.shape
        kept = 0
        for layer in range(layers):
            if layer in self.bounded:
                kept += kv * min(n, self.bounded[layer])
            else:
                full = int(self.keep_full[layer].sum())
                kept += full * n + (kv - full) * min(n, self.sink + self.window)
        return kept / (layers * kv * n)


def streaming_visible(allowed: torch.Tensor, n_q: int, n_k: int, sink: int, window: int) -> torch.Tensor:
    """Of the keys in ``allowed`` (bool ``[batch, 1, q, k]``, left padding masked), those a
    streaming cache keeps: each row's first ``sink`` real keys and the last ``window`` keys up to
    the query (queries are the last ``n_q`` of ``n_k`` positions)."""
    keys = torch.arange(n_k, device=allowed.device)
    first = allowed[:, 0, -1, :].float().argmax(-1)  # the first real key: the last query sees every real key
    sinks = (keys[None, :] >= first[:, None]) & (keys[None, :] < first[:, None] + sink)  # [batch, k]
    q_abs = torch.arange(n_k - n_q, n_k, device=allowed.device)
    recent = visible(q_abs[:, None], keys[None, :], sliding_window=window)  # [q, k]
    return allowed & (sinks[:, None, None, :] | recent[None, None])


def _allowed_and_streaming(mask: Any, n_q: int, n_k: int, sink: int, window: int,
                           device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The keys the model's mask lets each query see (bool ``[batch, 1, q, k]``), and those of
    them a streaming cache keeps."""
    if mask is not None and (mask.shape[-2:] != (n_q, n_k) or mask.shape[1] != 1):
        raise BadInputError(f"compressed expects a [batch, 1, {n_q}, {n_k}] attention mask, got {tuple(mask.shape)}")
    allowed = layer_visible(mask, n_q, n_k, device=device)  # None: SDPA's causal flag (the layer has no window)
    return allowed, streaming_visible(allowed, n_q, n_k, sink, window)


def _edit(comp: Compression, heads: torch.Tensor, cache: dict):
    """The mask edit of one layer: ``heads`` (bool ``[n_heads]``) are the query heads whose kv
    head streams. ``cache`` is shared by the layers: they get the same mask in one forward."""

    def edit(module: torch.nn.Module, mask: Any, query: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
        n_q, n_k = query.shape[2], key.shape[2]
        if comp.keys_seen == 0 and comp.sink + comp.window >= n_k:
            raise BadInputError(
                f"a sink of {comp.sink} and a window of {comp.window} keep all {n_k} keys of this prompt, so nothing "
                f"would be compressed; use a prompt longer than {comp.sink + comp.window} tokens or a smaller window")
        comp.keys_seen = max(comp.keys_seen, n_k)
        k = (id(mask), n_q, n_k)
        if k not in cache:  # the first layer of a forward; the others get the same mask
            cache.clear()  # a new forward: the previous masks are done
            cache[k] = (mask, *_allowed_and_streaming(mask, n_q, n_k, comp.sink, comp.window, key.device))
        _, allowed, stream = cache[k]
        h = heads.to(key.device)[None, :, None, None]
        return torch.where(h, stream, allowed)  # [batch, heads, q, k]

    return edit


@contextlib.contextmanager
def compressed(model: Model, keep_full: Any, *, sink: int = SINK, window: int = WINDOW) -> Iterator[Compression]:
    """Run ``model`` as if every kv head not in ``keep_full`` kept only its first ``sink`` keys and
    its last ``window`` keys, in prefill and decoding, while the block runs.

    Args:
        keep_full: bool ``[layers, kv_heads]``, True where a kv head keeps its full cache (a GQA kv
            head serves a group of query heads: all of them see what it keeps).
            ``HeadScores.keep_full`` chooses them from a score; all False with every layer
            unbounded is StreamingLLM (Xiao et al., 2023).
        sink, window: the streaming cache (DuoAttention's defaults: 4 and 256); ``window``
            counts the query itself, as a sliding window does.

    Yields a ``Compression``: ``kept_fraction()`` is the share of the full cache kept for the
    longest sequence run in the block. The first forward must have more than ``sink + window``
    keys, or nothing would be compressed (``BadInputError``). Attention statistics
    (``head_stats``, retrieval scoring) cannot run inside the block (``UsageError``); plain
    forwards, ``model.generate``, traces and ``attention_pattern`` (which applies the edited
    mask) can. Blocks nest, and combine with ``circuits.knockout`` in either order: each edit
    gets the model's own mask and a key stays visible only where every open edit keeps it
    (``interp.core.attention.combine_edits``). It saves no memory: see the module docstring.
    """
    keep = check_keep_full(model, keep_full)
    sink, window = whole_number(sink, 0, "sink"), whole_number(window, 1, "window")
    comp = Compression(keep, sink, window, sliding_windows(model))
    group = model.cfg.n_heads // model.cfg.n_kv_heads
    edits: dict = {}
    cache: dict = {}
    for layer in range(model.cfg.n_layers):
        if layer in comp.bounded or keep[layer].all():
            continue
        heads = torch.as_tensor(~keep[layer]).repeat_interleave(group)
        edits[layer] = _edit(comp, heads, cache)
    with model.trace(mask_edits=edits):
        yield comp
