"""The attention mask, written once: which keys a query may read.

``layer_visible`` is the one mask builder: causal order, a layer's sliding window, key padding
and whatever mask a layer was handed (boolean or additive, with knocked-out edges or a compressed
cache) as one boolean ``[batch, heads, q, k]``; ``visible`` is its rule for two positions.
Patterns (``interp.attention_pattern``), attention-edge knockout (``circuits.knockout``),
compressed caches (``interp.heads.compressed``), the combination of mask edits
(``interp.core.attention``) and the kernels' PyTorch paths (``attention_stats``, ``decode_argmax``)
build their masks here; the Triton kernel applies the same two rules in its key loop
(``interp/kernels/triton_stats.py``: ``CAUSAL``, ``HAS_WINDOW``). ``as_mask`` is the one way back
from a boolean mask to the additive form an attention function may read.
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
                  key_mask: torch.Tensor | None = None, device: torch.device | None = None) -> torch.Tensor:
    """The keys a layer's attention mask lets each query read, as bool ``[batch or 1, heads or 1,
    n_q, n_k]``: ``None`` is SDPA's causal flag (queries are the last ``n_q`` of ``n_k``
    positions; plus ``sliding_window`` where the layer has one), a boolean mask is itself (True:
    visible) and an additive one is visible where it is above half the dtype's lowest value.
    A mask with more key columns than ``n_k`` is cut to the first ``n_k``, as the attention
    functions do. ``key_mask`` (``[batch, n_k]``, True for real keys) hides padding keys too.

    >>> layer_visible(None, 2, 3).int()
    tensor([[[[1, 1, 0],
              [1, 1, 1]]]], dtype=torch.int32)
    >>> layer_visible(None, 1, 4, sliding_window=2, key_mask=torch.tensor([[0, 1, 1, 1]])).int()
    tensor([[[[0, 0, 1, 1]]]], dtype=torch.int32)
    """
    if mask is None:
        q_abs = torch.arange(n_k - n_q, n_k, device=device)[:, None]
        out = visible(q_abs, torch.arange(n_k, device=device)[None, :], sliding_window=sliding_window)[None, None]
    else:
        if mask.shape[-1] < n_k:
            raise ValueError(f"an attention mask of {mask.shape[-1]} key columns for {n_k} keys")
        mask = mask[..., :n_k]
        out = mask if mask.dtype == torch.bool else mask > torch.finfo(mask.dtype).min / 2
    if key_mask is not None:
        out = out & key_mask.to(out.device).bool()[:, None, None, :]
    return out


def as_mask(allowed: torch.Tensor, like: torch.Tensor | torch.dtype | None = None) -> torch.Tensor:
    """The boolean mask ``allowed`` (True: visible) in the form an attention function reads: as it
    is for ``like`` None or a boolean mask; additive for a dtype (0 where visible, the dtype's
    lowest value where hidden; the eager functions add the mask to the scores, so a boolean there
    would add 1); for an additive mask ``like``, that mask with the hidden keys set to the lowest
    value (its own values kept where visible). The one conversion from boolean to additive.

    >>> as_mask(torch.tensor([True, False]), torch.float32)
    tensor([ 0.0000e+00, -3.4028e+38])
    """
    if like is None or like is torch.bool or (isinstance(like, torch.Tensor) and like.dtype == torch.bool):
        return allowed
    if isinstance(like, torch.Tensor):
        return like.masked_fill(~allowed, torch.finfo(like.dtype).min)
    return torch.zeros((), dtype=like, device=allowed.device).masked_fill(~allowed, torch.finfo(like).min)


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
