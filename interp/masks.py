"""The attention mask, written once: which keys a query may read.

Patterns (``interp.attention_pattern``), attention-edge knockout (``circuits.knockout``) and the
kernels' PyTorch path build their masks here; the Triton kernel applies the same two rules in
its key loop (``interp/kernels/triton_stats.py``: ``CAUSAL``, ``HAS_WINDOW``). Key padding is each
caller's own ``[batch, keys]`` mask, combined with this one.
"""

from __future__ import annotations

import torch


def visible(q_abs: torch.Tensor, keys: torch.Tensor, *, causal: bool = True,
            sliding_window: int | None = None) -> torch.Tensor:
    """Whether the key at position ``keys`` is visible from the query at position ``q_abs``
    (absolute positions, broadcast against each other): at or before the query when
    ``causal``, and fewer than ``sliding_window`` positions back when the layer has a window.

    >>> visible(torch.arange(4)[:, None], torch.arange(4)[None, :], sliding_window=2).int()
    tensor([[1, 0, 0, 0],
            [1, 1, 0, 0],
            [0, 1, 1, 0],
            [0, 0, 1, 1]], dtype=torch.int32)
    """
    ok = torch.ones(torch.broadcast_shapes(q_abs.shape, keys.shape), dtype=torch.bool, device=keys.device)
    if causal:
        ok &= keys <= q_abs
    if sliding_window is not None and sliding_window > 0:
        ok &= q_abs - keys < sliding_window
    return ok


def layer_visible(mask: torch.Tensor | None, n_q: int, n_k: int, *, sliding_window: int | None = None,
                  device: torch.device | None = None) -> torch.Tensor:
    """The keys a layer's attention mask lets each query read, as bool ``[batch or 1, heads or 1,
    n_q, n_k]``: ``None`` is SDPA's causal flag (queries are the last ``n_q`` of ``n_k``
    positions; plus ``sliding_window`` where the layer has one), a boolean mask is itself (True:
    visible) and an additive one is visible where it is above half the dtype's lowest value.
    A mask with more key columns than ``n_k`` is cut to the first ``n_k``, as the attention
    functions do.

    >>> layer_visible(None, 2, 3).int()
    tensor([[[[1, 1, 0],
              [1, 1, 1]]]], dtype=torch.int32)
    """
    if mask is None:
        q_abs = torch.arange(n_k - n_q, n_k, device=device)[:, None]
        return visible(q_abs, torch.arange(n_k, device=device)[None, :], sliding_window=sliding_window)[None, None]
    if mask.shape[-1] < n_k:
        raise ValueError(f"an attention mask of {mask.shape[-1]} key columns for {n_k} keys")
    mask = mask[..., :n_k]
    if mask.dtype == torch.bool:
        return mask
    return mask > torch.finfo(mask.dtype).min / 2


def additive_only(mask: torch.Tensor) -> bool:
    """Whether a float mask only hides keys (every entry 0 or at most half the dtype's lowest
    value), so that ``layer_visible`` describes it completely; a mask that adds a bias (ALiBi)
    does not."""
    if mask.dtype == torch.bool:
        return True
    return bool(((mask == 0) | (mask <= torch.finfo(mask.dtype).min / 2)).all())


def position_kwargs(attention_mask: torch.Tensor | None, n_new: int | None = None) -> dict[str, torch.Tensor]:
    """``{"position_ids": ...}`` counting each row's real tokens (the first real token is 0), for
    a left-padded batch; ``{}`` when no row is padded. Without it transformers numbers every row
    0..n-1, padding included, which shifts a padded row's absolute position embeddings (GPT-2) and
    so changes its activations; ``generate`` counts from the mask the same way. ``n_new``: only
    the last ``n_new`` positions (the tokens a forward over a key/value cache adds).

    >>> position_kwargs(torch.tensor([[0, 1, 1], [1, 1, 1]]))["position_ids"]
    tensor([[1, 0, 1],
            [0, 1, 2]])
    >>> position_kwargs(torch.ones(2, 3, dtype=torch.long))
    {}
    """
    if attention_mask is None or bool(attention_mask.all()):
        return {}
    mask = attention_mask.long()
    positions = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 1)
    return {"position_ids": positions if n_new is None else positions[:, -n_new:]}
