"""Attention probabilities recomputed from captured q and k, for chosen heads and rows only."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from interp.errors import OutOfRangeError
from interp.tracing import Trace


def attention_pattern(
    trace: Trace,
    layer: int,
    heads: int | Sequence[int] | None = None,
    rows: int | Sequence[int] | None = None,
    *,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Softmax attention ``[batch, heads, rows, keys]`` exactly as the layer computed it.

    Uses the trace's ``blocks.{layer}.attn.hook_q`` and ``hook_k`` (capture both, at all
    positions) and the layer's recorded spec: scaling, GQA/MQA sharing of kv heads, causal
    and sliding-window masks, soft-capping, and key padding from the trace's attention mask.
    ``rows`` are query positions (default: all); only those rows are built. Rows of padding
    tokens, which attend to nothing, come back as zeros. A layer outside the model raises
    ``OutOfRangeError`` naming the valid layers; one whose q and k were not captured, a
    ``KeyError`` naming what was.

    >>> with model.trace(text, sites=["blocks.3.attn.hook_q", "blocks.3.attn.hook_k"]) as tr:
    ...     pass                                                    # doctest: +SKIP
    >>> attention_pattern(tr, 3, heads=[0, 4], rows=[-1]).shape     # doctest: +SKIP
    """
    if trace.n_layers is not None and not 0 <= layer < trace.n_layers:
        raise OutOfRangeError("layer", layer, trace.n_layers)
    q = trace[f"blocks.{layer}.attn.hook_q"]  # [b, q_pos, H, d]
    k = trace[f"blocks.{layer}.attn.hook_k"]  # [b, k_pos, Hkv, d]
    spec = trace.specs[layer]
    n_q, n_k = q.shape[1], k.shape[1]
    head_list = _indices(heads, spec.n_heads, "head")
    row_list = _indices(rows, n_q, "row")
    rows_t = torch.tensor(row_list, device=q.device)
    kv = torch.tensor([h // spec.group for h in head_list], device=q.device)

    qs = q[:, rows_t][:, :, head_list].to(dtype).transpose(1, 2)  # [b, h, r, d]
    ks = k[:, :, kv].to(dtype).transpose(1, 2)  # [b, h, k, d]
    scores = (qs @ ks.transpose(-1, -2)) * spec.scaling
    if spec.softcap is not None:
        scores = torch.tanh(scores / spec.softcap) * spec.softcap

    # Query i sits at key index i + (n_k - n_q): the cache holds the earlier positions.
    q_abs = rows_t + (n_k - n_q)
    keys = torch.arange(n_k, device=q.device)
    allowed = keys[None, :] <= q_abs[:, None]
    if spec.sliding_window is not None:
        allowed &= q_abs[:, None] - keys[None, :] < spec.sliding_window
    allowed = allowed[None, None]
    if trace.attention_mask is not None:
        key_mask = trace.attention_mask.to(q.device)[:, -n_k:].bool()
        allowed = allowed & key_mask[:, None, None, :]
    scores = scores.masked_fill(~allowed, float("-inf"))
    probs = torch.softmax(scores, dim=-1)
    return torch.nan_to_num(probs, nan=0.0)


def _indices(index: int | Sequence[int] | None, size: int, kind: str) -> list[int]:
    if index is None:
        return list(range(size))
    items = [index] if isinstance(index, int) else list(index)
    out = []
    for i in items:
        if not -size <= i < size:
            raise OutOfRangeError(kind, i, size)
        out.append(i % size)
    return out
