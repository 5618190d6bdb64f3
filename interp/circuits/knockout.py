"""Attention-edge knockout: stop chosen queries from reading chosen keys, through the attention mask.

An edge ``(query i, key j)`` is removed by masking the score ``q_i·k_j`` before the softmax, in
chosen layers (and optionally chosen query heads), so the row renormalises over the keys it
may still see (Cho et al., "Revisiting In-context Learning Inference Circuit", ``Masked_ICL_inference``;
the paper adds ``finfo.min``, a boolean mask is the same softmax). The mask is handed to the
model's own attention function (SDPA stays SDPA: it gets a mask tensor instead of ``is_causal``),
so no forward pass is rewritten. Hooks are removed when the block ends, also on errors.

Open the knockout first, then the trace: ``model.trace(inputs)`` runs its forward pass when it
is entered, so a knockout opened inside it would change nothing; that order raises
``UsageError``. Knockouts nest and combine with ``interp.heads.compressed`` in either order:
each gets the model's own mask and a key stays visible only where every open edit keeps it
(``interp.core.attention.combine_edits``); ``attention_pattern`` applies the combined mask.

>>> import torch
>>> from interp.circuits.knockout import knockout, edges_mask
>>> blocked = edges_mask([[(5, 2), (5, 3)]], n=8)        # query 5 may not read keys 2 and 3
>>> blocked.shape
torch.Size([1, 8, 8])
>>> with knockout(model, blocked, layers=[0, 1]):        # doctest: +SKIP
...     logits = model.run(ids)                          # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import torch

from interp.core.masks import as_mask, layer_visible, position_kwargs
from interp.core.model import Model
from interp.errors import BadInputError, UsageError, check_position


def edges_mask(edges: Sequence[Iterable[tuple[int, int]]], n: int) -> torch.Tensor:
    """Per-item lists of ``(query, key)`` pairs to a boolean ``[batch, n, n]`` block matrix.

    Negative positions count from the end (``-1`` is the last token).

    Args:
        edges: per batch item, a list of ``(query, key)`` positions.

    Returns:
        A bool tensor ``[batch, n, n]`` for ``knockout``.
    """
    out = torch.zeros(len(edges), n, n, dtype=torch.bool)
    for b, pairs in enumerate(edges):
        for q, k in pairs:
            for p in (q, k):
                check_position(p, n, hint=f"edge ({q}, {k}) of item {b} is outside a sequence of {n} tokens "
                                          "(negative positions count from the end)")
            out[b, q % n, k % n] = True
    return out


def _items(shape: Any) -> str:
    b, n = int(shape[0]), int(shape[1])
    return f"{b} item{'s' if b != 1 else ''} of {n} token{'s' if n != 1 else ''}"


def _combine(base: torch.Tensor | None, window: int | None, blocked: torch.Tensor, heads: list[int] | None,
             n_heads: int) -> torch.Tensor:
    """The layer's own mask (``base``; None: causal plus its ``window``) without the blocked edges,
    in the form of ``base`` (boolean for None; the attention wrapper turns it additive for eager)."""
    b, n_q, n_k = blocked.shape
    drop = blocked[:, None]  # [b, 1, q, k]
    if heads is not None:
        sel = torch.zeros(n_heads, dtype=torch.bool, device=blocked.device)
        sel[heads] = True
        drop = drop & sel[None, :, None, None]
    if base is not None and base.shape[-2:] != (n_q, n_k):
        raise BadInputError(f"knockout mask covers {n_q} queries x {n_k} keys but the layer sees "
                         f"{base.shape[-2]} x {base.shape[-1]}; knockout needs a full forward pass without a KV cache")
    seen = layer_visible(base, n_q, n_k, sliding_window=window, device=blocked.device)
    allowed = seen & ~drop
    lost = seen.any(-1) & ~allowed.any(-1)
    if bool(lost.any()):
        item, _, row = (int(x) for x in lost.nonzero()[0])
        raise BadInputError(f"knockout leaves query {row} of item {item} with no key to attend to; keep at least "
                         "one edge per row (e.g. never block a token's edge to itself)")
    return as_mask(allowed, base)


@contextlib.contextmanager
def knockout(
    model: Model,
    blocked: torch.Tensor,
    layers: int | Iterable[int] | None = None,
    heads: int | Sequence[int] | None = None,
) -> Iterator[None]:
    """Block query→key edges while the block runs.

    Args:
        blocked: bool ``[batch, pos, pos]`` (query, key): True removes the edge. Its batch and
            length must be those of the inputs run inside the block (see ``edges_mask``).
        layers: layers where the edges are removed (default: all).
        heads: query heads where they are removed (default: all heads of those layers).

    Rows of real tokens must keep at least one visible key (else a clear error).

    Open the knockout first, then the trace (``with knockout(model, blocked),
    model.trace(inputs) as tr:``): a trace with inputs runs its forward pass on entry, so
    opening a knockout inside one raises ``UsageError`` instead of silently changing nothing.
    Inside a trace without inputs (``with model.trace(sites=...):``) a knockout is fine: the
    forward passes you run after it see it.

    Returns:
        Yields nothing: a context manager; the edges are restored when it ends.
    """
    ran = [t for t in model.open_traces if t.ran_forward]
    if ran:
        raise UsageError(
            "knockout(...) was opened inside `with model.trace(inputs)`, whose forward pass already ran when the trace "
            "was entered, so the knockout would change nothing; open the knockout first, then the trace: "
            "`with knockout(model, blocked, layers=...), model.trace(inputs, sites=...) as tr:`"
        )
    with _knockout(model, blocked, layers, heads):
        yield


def _check_blocked(model: Model, blocked: Any, layers: Any, heads: Any,
                   mask: torch.Tensor | None = None) -> tuple[list[int], list[int] | None]:
    if not isinstance(blocked, torch.Tensor) or blocked.dtype != torch.bool or blocked.ndim != 3 \
            or blocked.shape[1] != blocked.shape[2]:
        got = f"{blocked.dtype} {tuple(blocked.shape)}" if isinstance(blocked, torch.Tensor) else type(blocked).__name__
        raise BadInputError(f"blocked must be a bool [batch, pos, pos] tensor (see edges_mask), got {got}")
    if isinstance(layers, int):
        layers = [layers]
    chosen = sorted({model.check_layer(layer) for layer in (range(model.cfg.n_layers) if layers is None else layers)})
    head_list = model.check_heads(heads) if heads is not None else None
    if mask is not None:  # rows of real tokens that lose every key, in any chosen layer (its window too)
        n = blocked.shape[1]
        real = mask.to(blocked.device).bool()
        lost = torch.zeros_like(real)
        for window in {model.sliding_window(layer) for layer in chosen}:
            seen = layer_visible(None, n, n, sliding_window=window, key_mask=real, device=blocked.device)[:, 0]
            lost |= real & ~(seen & ~blocked).any(-1)
        if bool(lost.any()):
            item, row = (int(x) for x in lost.nonzero()[0])
            raise BadInputError(f"knockout leaves query {row} of item {item} with no key to attend to; keep at least "
                                "one edge per row (e.g. never block a token's edge to itself)")
    return chosen, head_list


@contextlib.contextmanager
def _knockout(model: Model, blocked: torch.Tensor, layers: Any, heads: Any) -> Iterator[None]:
    """``knockout`` without the order check (for callers that run their own forward inside)."""
    chosen, head_list = _check_blocked(model, blocked, layers, heads)
    # Layers that share a mask share the knocked-out mask; the base is kept so its id stays unique.
    cache: dict[tuple, tuple[Any, torch.Tensor]] = {}

    def edit_for(window: int | None):
        def edit(module: torch.nn.Module, base: Any, query: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
            if query.shape[0] != blocked.shape[0] or query.shape[2] != blocked.shape[1]:
                shape = (query.shape[0], query.shape[2])
                raise BadInputError(f"knockout mask is for {_items(blocked.shape)}, but the model runs {_items(shape)}")
            cache_key = (id(base), window)
            if cache_key not in cache:
                cache[cache_key] = (base, _combine(base, window, blocked.to(query.device), head_list, model.cfg.n_heads))
            return cache[cache_key][1]

        return edit

    edits = {window: edit_for(window) for window in {model.sliding_window(layer) for layer in chosen}}
    with model.trace(mask_edits={layer: edits[model.sliding_window(layer)] for layer in chosen}):
        yield


def run_with_knockout(model: Model, inputs: Any, blocked: torch.Tensor, layers: int | Iterable[int] | None = None,
                      heads: int | Sequence[int] | None = None, *, last_only: bool = False) -> torch.Tensor:
    """Logits under a knockout; ``last_only`` computes the last position's logits only ``[batch, vocab]``.

    Args:
        model: the model (an ``interp.Model``)
        inputs: the inputs.
        blocked: a bool ``[batch, pos, pos]`` mask (``edges_mask``).
        layers: layers where edges are removed (default: all).
        heads: query heads (default: all).

    Returns:
        The logits, ``[batch, pos, vocab]`` (or ``[batch, vocab]``).
    """
    tokens = model.to_tokens(inputs)
    ids = tokens["input_ids"]
    if isinstance(blocked, torch.Tensor) and blocked.ndim == 3 and tuple(blocked.shape[:2]) != tuple(ids.shape):
        raise BadInputError(f"knockout mask is for {_items(blocked.shape)}, but the inputs are {_items(ids.shape)}")
    _check_blocked(model, blocked, layers, heads, tokens["attention_mask"])
    # Its own forward runs inside the knockout, so an open trace around it is no problem.
    with _knockout(model, blocked, layers, heads), torch.no_grad():
        extra = {"logits_to_keep": 1} if last_only else {}
        logits = model.hf(**tokens, **position_kwargs(tokens.get("attention_mask")), use_cache=False, **extra).logits
    return logits[:, -1] if last_only else logits
