"""Strict JSON for reports: NaN and infinities become null, numpy values plain Python ones."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np


def finite(obj: Any) -> Any:
    """``obj`` with NaN and infinities (floats, numpy scalars) as None and numpy values as Python
    ones, so that it is strict JSON (``json.dumps(..., allow_nan=False)``: NaN is null).

    >>> finite({"r": float("nan"), "xs": [1.0, float("inf")], "n": np.int64(3)})
    {'r': None, 'xs': [1.0, None], 'n': 3}
    """
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return finite(obj.tolist())
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def dumps(doc: Any, **kwargs: Any) -> str:
    """Strict JSON text of ``doc``: non-finite numbers are written as null."""
    return json.dumps(finite(doc), allow_nan=False, **kwargs)
