"""The arg-max key of one query row per head: what a decoding step of a retrieval scan needs.

One batched matrix product per layer instead of a row's full statistics: under GQA/MQA each kv
head is read once by its group of query heads, and the scores are scaled and soft-capped exactly
as the layer does (so ties resolve as in ``attention_stats``), with the sliding window and key
padding masked.

>>> import torch
>>> q, k = torch.randn(1, 4, 1, 8), torch.randn(1, 2, 10, 8)
>>> decode_argmax(q, k, scaling=8 ** -0.5).shape
torch.Size([1, 4])
"""

from __future__ import annotations

import torch

from interp.core.masks import layer_visible


def decode_argmax(q: torch.Tensor, k: torch.Tensor, *, scaling: float, sliding_window: int | None = None,
                  softcap: float | None = None, key_mask: torch.Tensor | None = None) -> torch.Tensor:
    """``[batch, heads]`` index (into ``k``'s positions) of each head's largest attention score for
    the last query row of ``q`` ``[batch, heads, rows, d]``, which sits at ``k``'s last position.

    ``k``: ``[batch, kv_heads, keys, d]``; ``key_mask``: ``[batch, keys]``, True for real keys.
    The keys it may read are those of ``interp.core.masks.layer_visible`` (every key up to the query,
    within the window, not padding). Ties go to the first key.

    Args:
        scaling: the score scale (``1/sqrt(d)`` usually).
        sliding_window: the layer's window, if any.
        softcap: the layer's soft-cap, if any.

    Returns:
        An int tensor ``[batch, heads]``.
    """
    b, h, _, d = q.shape
    hkv, n = k.shape[1], k.shape[2]
    if h % hkv:
        raise ValueError(f"{h} query heads cannot share {hkv} kv heads")
    qg = q[:, :, -1].float().reshape(b, hkv, h // hkv, d)
    s = (qg @ k.float().transpose(-1, -2)) * scaling  # [b, kv, group, keys]
    if softcap is not None:
        s = torch.tanh(s / softcap) * softcap
    if sliding_window is not None or key_mask is not None:
        ok = layer_visible(None, 1, n, sliding_window=sliding_window, key_mask=key_mask, device=s.device)
        s = s.masked_fill(~ok, float("-inf"))  # ok: [batch or 1, 1, 1, keys]
    return s.argmax(dim=-1).reshape(b, h)
