"""Key/value caches, one way for the whole toolkit.

transformers renamed the cache argument and output ``past_key_values`` to ``cache`` during 5.x
(the old name warns, and goes in a later release); ``run_cached`` passes whichever the model's
forward takes and returns the cache it gives back. A cache is extended in place by every
forward that gets it, so ``fork`` copies one (optionally repeated over batch rows) before it is
reused.
"""

from __future__ import annotations

import copy
import inspect
from typing import Any

import torch

from interp.core.masks import position_kwargs

_KEYWORDS: dict[type, str] = {}


def cache_keyword(module: torch.nn.Module) -> str:
    """The name under which ``module``'s forward takes and returns its key/value cache."""
    kind = type(module)
    if kind not in _KEYWORDS:
        params = inspect.signature(module.forward).parameters
        _KEYWORDS[kind] = "cache" if "cache" in params else "past_key_values"
    return _KEYWORDS[kind]


def run_cached(module: torch.nn.Module, cache: Any = None, **inputs: Any) -> tuple[Any, Any]:
    """``module(**inputs, use_cache=True)`` continuing ``cache`` (``None``: a new one); returns
    the output and the cache it holds (extended in place when ``cache`` was given)."""
    kw = cache_keyword(module)
    if "position_ids" not in inputs:  # left padding: count each row's real tokens (see position_kwargs)
        inputs.update(position_kwargs(inputs.get("attention_mask"), inputs["input_ids"].shape[1]))
    out = module(**inputs, use_cache=True, **({kw: cache} if cache is not None else {}))
    return out, out.get(kw)


def fork(cache: Any, rows: int = 1) -> Any:
    """A copy of ``cache`` that later forwards may extend, with every batch row repeated ``rows``
    times (a one-row prefix shared by a batch)."""
    out = copy.deepcopy(cache)
    if rows > 1:
        out.batch_repeat_interleave(rows)
    return out
