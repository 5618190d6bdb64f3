"""Head scans: previous-token, duplicate, induction, n-gram and retrieval heads, with causal checks.

>>> import interp
>>> model = interp.load("smollm2-135m")                                          # doctest: +SKIP
>>> scores = interp.heads.scan(model, ["induction", "prev_token"])               # doctest: +SKIP
>>> scores.top("induction", 5); scores.heatmap("induction"); scores.save("out")  # doctest: +SKIP
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from interp.heads.names import SCORES

if TYPE_CHECKING:
    from interp.heads.head_scan import plan_scan, scan
    from interp.heads.table import HeadScores

_NAMES = {"plan_scan": "interp.heads.head_scan", "scan": "interp.heads.head_scan", "HeadScores": "interp.heads.table"}


def __getattr__(name: str) -> Any:  # loaded on first use, so the CLI's parser stays light
    if name not in _NAMES:
        raise AttributeError(f"module 'interp.heads' has no attribute {name!r}")
    value = getattr(importlib.import_module(_NAMES[name]), name)
    globals()[name] = value
    return value


__all__ = ["SCORES", "HeadScores", "plan_scan", "scan"]
