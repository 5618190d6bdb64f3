"""Attention probabilities recomputed from captured q and k, for chosen heads and rows only."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from interp.core.masks import visible
from interp.core.tracing import Trace
from interp.errors import BadInputError, check_index, check_indices, check_position


def attention_pattern(
    trace: Trace,
    layer: int,
    heads: int | Sequence[int] | None = None,
    rows: int | Sequence[int] | None = None,
    *,
    step: int = -1,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Softmax attention ``[batch, heads, rows, keys]`` exactly as the layer computed it.

    Uses the trace's ``blocks.{layer}.attn.hook_q`` and ``hook_k`` (capture both, at all
    positions) and the layer's recorded spec: scaling, GQA/MQA sharing of kv heads, causal
    and sliding-window masks, soft-capping, and key padding from the trace's attention mask.
    ``rows`` are query positions (default: all); only those rows are built. Rows of padding
    tokens, which attend to nothing, come back as zeros. A layer outside the model raises
    ``OutOfRangeError`` naming the valid layers; one whose q and k were not captured, a
    ``KeyError`` naming what was; q or k captured at some positions only (``positions=``) or
    through a reducer, a ``BadInputError``: a row needs every key position, so capture both
    at all positions and pick query rows with ``rows=``.

    The mask is the one the layer's attention function used in that forward, recorded by the
    trace: padding, and any knockout or ``compressed`` cache open around the run, are applied
    exactly as the model applied them. ``step`` picks the forward pass when the trace recorded
    several (``trace.steps``; default ``-1``, the last): under ``generate`` with a KV cache, step
    0 is the prompt and each later step's queries are that step's new token and its keys every
    cached position. A layer whose mask adds values other than 0 and -inf (a bias such as ALiBi)
    raises ``BadInputError`` rather than give a pattern that leaves it out.

    Args:
        dtype: the dtype the probabilities are computed and returned in (float32 by default).

    Returns:
        A ``[batch, heads, rows, keys]`` tensor of attention probabilities.

    >>> with model.trace(text, sites=["blocks.3.attn.hook_q", "blocks.3.attn.hook_k"]) as tr:
    ...     pass                                                    # doctest: +SKIP
    >>> attention_pattern(tr, 3, heads=[0, 4], rows=[-1]).shape     # doctest: +SKIP
    """
    if trace.n_layers is not None:
        layer = check_index(layer, trace.n_layers, "layer")
    names = [f"blocks.{layer}.attn.hook_q", f"blocks.{layer}.attn.hook_k"]
    qs_all, ks_all = trace.steps(names[0]), trace.steps(names[1])  # a KeyError naming what was captured
    _check_complete(trace, layer, names)
    masks = trace.masks.get(layer, [])
    n_steps = len(qs_all)
    if len(ks_all) != n_steps or (masks and len(masks) != n_steps):
        raise BadInputError(f"attention_pattern(layer={layer}): this trace holds {n_steps} forward(s) of {names[0]} but "
                            f"{len(ks_all)} of {names[1]} and {len(masks)} recorded mask(s); capture hook_q and hook_k "
                            "in the same trace")
    step = check_position(step, n_steps, kind="step", hint=f"attention_pattern(step=...): this trace recorded "
                          f"{n_steps} forward pass(es) of layer {layer} (negative steps count from the end)")
    q, k = qs_all[step], ks_all[step]  # [b, q_pos, H, d], [b, k_pos, Hkv, d]
    used = masks[step] if masks else None
    if isinstance(used, str):
        raise BadInputError(f"attention_pattern(layer={layer}): the layer's mask in that forward adds values other than "
                            "0 and -inf (a bias), which a pattern from q and k alone would leave out")
    spec = trace.specs[layer]
    n_q, n_k = q.shape[1], k.shape[1]
    head_list = _indices(heads, spec.n_heads, "head", f"attention_pattern(heads=...): layer {layer} has {spec.n_heads} "
                         "query heads")
    row_list = _indices(rows, n_q, "row", f"attention_pattern(rows=...): rows are the {n_q} query positions "
                        "captured (negative rows count from the end)")
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
    allowed = visible(q_abs[:, None], keys[None, :], sliding_window=spec.sliding_window)[None, None]
    if used is not None:  # the mask the layer used (padding, knockouts, compressed caches)
        used = used.to(q.device)
        if used.shape[-1] != n_k or used.shape[-2] not in (1, n_q):
            raise BadInputError(f"attention_pattern(layer={layer}): the recorded mask is {tuple(used.shape)} for "
                                f"{n_q} queries and {n_k} keys")
        used = used if used.shape[-2] == 1 else used[..., rows_t, :]
        used = used if used.shape[1] == 1 else used[:, head_list]
        allowed = allowed & used
    elif not masks and trace.attention_mask is not None:
        # Keys are the first n_k positions of the sequence the mask covers (all of it for a trace
        # with inputs; under generate the mask also covers the last token, which no step read).
        key_mask = trace.attention_mask.to(q.device)[:, :n_k].bool()
        allowed = allowed & key_mask[:, None, None, :]
    scores = scores.masked_fill(~allowed, float("-inf"))
    probs = torch.softmax(scores, dim=-1)
    return torch.nan_to_num(probs, nan=0.0)


def _check_complete(trace: Trace, layer: int, names: list[str]) -> None:
    """q and k must be whole tensors at every position, or the softmax runs over the wrong keys."""
    for name in names:
        if name in trace.reduced:
            raise BadInputError(
                f"attention_pattern(layer={layer}) needs {name} itself, but this trace captured it through a reducer "
                f"(reduce=), which stores the reducer's result; capture hook_q and hook_k at all positions without "
                f"a reducer (sites='blocks.{layer}.attn.hook_[qk]') and pick query rows with rows="
            )
    for name in names:
        kept = trace.kept_positions.get(name)
        if kept is not None:
            raise BadInputError(
                f"attention_pattern(layer={layer}) needs {name} at every position, but this trace kept only positions "
                f"{kept!r} (positions=); each row's softmax runs over all earlier keys, so capture hook_q and hook_k "
                f"at all positions (leave out positions=) and pick query rows with rows="
            )


def _indices(index: int | Sequence[int] | None, size: int, kind: str, hint: str = "") -> list[int]:
    return [i % size for i in check_indices(index, size, kind, negative=True, hint=hint)]
