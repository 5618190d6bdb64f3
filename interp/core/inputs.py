"""Input normalisation: what a user passes as prompts, tokens and positions, checked and turned into
the one form the model runs on, with an error naming the problem before any forward pass.

``Model.to_tokens``, ``Model.token_id`` and ``trace(positions=...)`` are these functions with the
model's tokenizer, context window and vocabulary.

>>> ids, mask = to_tokens([[1, 2, 3]], tokenizer=None, n_ctx=8, d_vocab=10, name="tiny")
>>> ids.tolist(), mask.tolist()
([[1, 2, 3]], [[1, 1, 1]])
>>> check_positions([0, -1], n_pos=4)
[0, -1]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from interp.core.tracing import check_slice
from interp.errors import (
    BadInputError,
    OutOfRangeError,
    PromptTooLongError,
    as_index,
    check_position,
    check_text,
)

Inputs = Any  # str | list[str] | token ids (list or tensor) | {"input_ids", "attention_mask"}
ACCEPTED = ("a str, a list of str, token ids (a list of ints, a list of equal-length lists of ints, or an integer "
            "tensor or array [pos] or [batch, pos]) or a dict with input_ids (and optionally attention_mask)")


def describe(x: Any) -> str:
    """A value as an error message shows it: its type and a short repr."""
    text = repr(x)
    return f"{type(x).__name__} {text if len(text) <= 60 else text[:57] + '...'}"


def _int_list(x: Any) -> bool:
    return isinstance(x, (list, tuple)) and all(as_index(i) is not None for i in x)


def _ids_tensor(x: Any, what: str) -> torch.Tensor:
    """Token ids (or an attention mask) as a 1-D or 2-D integer tensor; anything else: a clear error."""
    if isinstance(x, (list, tuple)):
        if x and all(isinstance(r, (list, tuple)) for r in x):
            for i, row in enumerate(x):
                if not row:
                    raise BadInputError(f"prompt {i} of {len(x)} is empty (0 token ids); every prompt needs at least "
                                        "one token")
                if not _int_list(row):
                    bad = next(t for t in row if not _int_list([t]))
                    raise BadInputError(f"{what} must be integers, got {describe(bad)} in row {i}; inputs may be {ACCEPTED}")
            lengths = sorted({len(r) for r in x})
            if len(lengths) > 1:
                raise BadInputError(f"{what} rows have different lengths {[len(r) for r in x]}; pass rows of one length, "
                                    "or a dict with left-padded input_ids and an attention_mask")
        elif not _int_list(x):
            bad = next(t for t in x if not _int_list([t]))
            raise BadInputError(f"{what} must be integers, got {describe(bad)}; inputs may be {ACCEPTED}")
    try:
        t = torch.as_tensor(x)
    except (TypeError, ValueError, RuntimeError):
        raise BadInputError(f"inputs must be {ACCEPTED}; got {describe(x)}") from None
    if t.dtype == torch.bool or t.is_floating_point() or t.is_complex():
        raise BadInputError(f"{what} must be integers, got a {t.dtype} tensor; inputs may be {ACCEPTED}")
    if t.ndim not in (1, 2):
        raise BadInputError(f"{what} must be [pos] or [batch, pos], got a tensor of shape {tuple(t.shape)}")
    return t.long()


def to_tokens(inputs: Inputs, tokenizer: Any, *, n_ctx: int, d_vocab: int, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Text, a batch of texts (left-padded) or token ids to ``(input_ids, attention_mask)``, both
    ``[batch, pos]`` on the CPU, for a model named ``name`` with ``tokenizer``, a context window of
    ``n_ctx`` and a vocabulary of ``d_vocab`` (``Model.to_tokens`` passes its own).

    Accepted: a str, a list of str, token ids (a list of ints, a list of equal-length lists,
    an integer tensor or array ``[pos]`` / ``[batch, pos]``) or a dict with ``input_ids``
    (and optionally ``attention_mask``). Anything else, an empty list, a prompt with no
    tokens (counting what the tokenizer adds, such as BOS), token ids outside the vocabulary
    or longer than the context window: a clear error, before any forward pass.
    """
    if isinstance(inputs, dict) or (hasattr(inputs, "keys") and hasattr(inputs, "__getitem__")):
        if "input_ids" not in inputs:
            raise BadInputError(f"a dict input needs input_ids (and optionally attention_mask); got keys "
                                f"{sorted(map(str, inputs.keys()))}")
        ids = _ids_tensor(inputs["input_ids"], "input_ids")
        mask = inputs.get("attention_mask")
        mask = torch.ones_like(ids) if mask is None else torch.as_tensor(mask)
        if mask.shape != ids.shape:
            raise BadInputError(f"attention_mask has shape {tuple(mask.shape)} but input_ids {tuple(ids.shape)}; "
                                "they must match")
    elif isinstance(inputs, str) or (isinstance(inputs, (list, tuple)) and inputs and isinstance(inputs[0], str)):
        texts = [inputs] if isinstance(inputs, str) else list(inputs)
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise BadInputError(f"a list of prompts must hold only str, but item {i} is {describe(t)}")
            check_text(t, "the prompt" if len(texts) == 1 else f"prompt {i} of {len(texts)}")
        side = tokenizer.padding_side
        tokenizer.padding_side = "left"
        try:
            enc = tokenizer(texts, return_tensors="pt", padding=True)
        finally:
            tokenizer.padding_side = side
        ids = torch.as_tensor(enc["input_ids"])
        mask = enc.get("attention_mask") if hasattr(enc, "get") else None
        mask = torch.ones_like(ids) if mask is None else torch.as_tensor(mask)
        if ids.ndim == 2 and ids.shape[1] == 0:
            mask = torch.zeros(len(texts), 0, dtype=torch.long)
        for i, row in enumerate(mask.reshape(len(texts), -1)):
            if not bool(row.any()):
                which = f"the prompt {texts[i]!r}" if len(texts) == 1 else f"prompt {i} of {len(texts)} ({texts[i]!r})"
                raise BadInputError(f"{which} is empty: the tokenizer gives it no tokens; every prompt needs at "
                                    "least one token")
    elif isinstance(inputs, (list, tuple)) and not inputs:
        raise BadInputError(f"inputs is an empty {type(inputs).__name__}: give at least one prompt; inputs may be "
                            f"{ACCEPTED}")
    elif isinstance(inputs, (list, tuple, torch.Tensor)) or (hasattr(inputs, "__array__") and hasattr(inputs, "dtype")):
        ids = _ids_tensor(inputs, "token ids")
        mask = torch.ones_like(ids)
    else:
        raise BadInputError(f"inputs must be {ACCEPTED}; got {describe(inputs)}")
    if ids.ndim == 1:
        ids, mask = ids[None], mask[None]
    if ids.shape[0] == 0:
        raise BadInputError("inputs hold no prompts (a batch of 0); give at least one prompt")
    if ids.shape[1] == 0:
        which = "the prompt" if ids.shape[0] == 1 else f"all {ids.shape[0]} prompts"
        raise BadInputError(f"{which} {'is' if ids.shape[0] == 1 else 'are'} empty (0 token ids); every prompt "
                            "needs at least one token")
    for i, row in enumerate(mask):
        if not bool(row.any()):
            raise BadInputError(f"prompt {i} of {len(mask)} has no real tokens: its attention_mask row is all 0")
    if ids.shape[1] > n_ctx:
        raise PromptTooLongError(
            f"input has {ids.shape[1]} tokens but {name} has a context window of {n_ctx}; "
            f"shorten it to at most {n_ctx} tokens"
        )
    outside = (ids >= d_vocab) | (ids < 0)
    if bool(outside.any()):
        b, p = (int(x) for x in outside.nonzero()[0])
        raise OutOfRangeError("token id", int(ids[b, p]), d_vocab,
                              hint=f"prompt {b}, position {p}; {name} has a vocabulary of {d_vocab}")
    return ids, mask


def left_pad(rows: Sequence[Sequence[int] | torch.Tensor], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of token ids of different lengths as one left-padded batch: ``(input_ids,
    attention_mask)``, both ``[rows, longest]``, padding filled with ``pad_id`` and masked.

    Args:
        rows: token ids per row (lists of ints or 1-D tensors).
        pad_id: the id written where a row is padded.

    Returns:
        the ids and the mask (1 on real tokens), as ``torch.long``.

    >>> left_pad([[5, 6, 7], [8]], 0)
    (tensor([[5, 6, 7],
            [0, 0, 8]]), tensor([[1, 1, 1],
            [0, 0, 1]]))
    """
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), int(pad_id), dtype=torch.long)
    mask = torch.zeros(len(rows), width, dtype=torch.long)
    for i, r in enumerate(rows):
        if len(r):
            ids[i, width - len(r):] = torch.as_tensor(r, dtype=torch.long)
            mask[i, width - len(r):] = 1
    return ids, mask


def token_id(token: Any, tokenizer: Any, *, d_vocab: int, name: str, what: str = "token") -> int:
    """A token given as a string that is exactly one token of ``tokenizer`` (no special tokens
    added), or as an id in a vocabulary of ``d_vocab``; anything else: a clear error naming
    ``what`` and the model ``name``."""
    if isinstance(token, str):
        check_text(token, what)
        try:
            enc = tokenizer(token, add_special_tokens=False)
        except TypeError:
            raise BadInputError(f"{what} {token!r}: the tokenizer of {name} cannot encode text here; pass the "
                                "token id instead") from None
        ids = enc["input_ids"]
        ids = ids.tolist() if hasattr(ids, "tolist") else list(ids)
        if ids and isinstance(ids[0], list):
            ids = ids[0]
        if len(ids) != 1:
            pieces = [_piece(tokenizer, int(i)) for i in ids]
            count = "no token" if not ids else f"{len(ids)} tokens {pieces}"
            raise BadInputError(f"{what} {token!r} is {count} of {name}'s tokenizer; pass a string that is "
                                "exactly one token, or a token id")
        return int(ids[0])
    index = as_index(token)
    if index is None:
        raise BadInputError(f"{what} must be a token id (int) or a string that is one token, got {describe(token)}")
    if not 0 <= index < d_vocab:
        raise OutOfRangeError("token id", index, d_vocab, hint=f"{what}; {name} has a vocabulary of "
                              f"{d_vocab}")
    return index

def _piece(tokenizer: Any, index: int) -> str:
    convert = getattr(tokenizer, "convert_ids_to_tokens", None)
    decode = getattr(tokenizer, "decode", None)
    if callable(decode):
        return str(decode([index]))
    return str(convert(index)) if callable(convert) else str(index)


def check_positions(positions: Any, n_pos: int | None) -> None | slice | list[int]:
    """``positions=`` of a trace as None, a slice or a list of ints, checked against ``n_pos`` tokens."""
    if positions is None:
        return positions
    if isinstance(positions, slice):
        if not all(v is None or as_index(v) is not None
                   for v in (positions.start, positions.stop, positions.step)) or positions.step == 0:
            raise BadInputError(f"positions= slice must have int bounds and a nonzero step, got {positions!r}")
        if n_pos is not None:
            check_slice(positions, n_pos, f"trace(positions=...) keeps no position of the input of {n_pos} "
                                          "tokens (a slice keeps the positions it overlaps; negative ones count "
                                          "from the end)")
        return positions
    items: list[int] | None = None
    if isinstance(positions, int):
        items = None if as_index(positions) is None else [positions]  # a bool is no position
    elif isinstance(positions, (list, tuple, range, torch.Tensor)) or hasattr(positions, "__array__"):
        try:
            values = positions.tolist() if hasattr(positions, "tolist") else list(positions)
        except (TypeError, ValueError):
            values = None
        values = values if isinstance(values, list) or values is None else [values]
        indices = [as_index(p) for p in values or []]  # ints, numpy ints; not floats, not bools
        items = None if values is None or None in indices else [int(i) for i in indices]  # type: ignore[arg-type]
    if items is None:
        raise BadInputError(f"positions must be an int, a list of ints (negative ones count from the end) or a "
                            f"slice, got {describe(positions)}")
    if n_pos is not None:
        for p in items:
            check_position(p, n_pos, hint=f"trace(positions=...): the input has {n_pos} tokens (negative "
                                          "positions count from the end)")
    return items
