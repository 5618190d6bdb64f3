"""Head scans: previous-token, duplicate, induction, n-gram and retrieval heads, with causal checks.

>>> import interp
>>> model = interp.load("smollm2-135m")                                          # doctest: +SKIP
>>> scores = interp.heads.scan(model, ["induction", "prev_token"])               # doctest: +SKIP
>>> scores.top("induction", 5); scores.heatmap("induction"); scores.save("out")  # doctest: +SKIP
>>> keep = scores.keep_full("streaming", 0.25, lowest=True)                      # doctest: +SKIP
>>> with interp.heads.compressed(model, keep_full=keep, sink=4, window=256):     # doctest: +SKIP
...     model.generate(long_prompt)
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from interp.heads.settings import SCORES

if TYPE_CHECKING:
    from interp.heads.compression import compressed
    from interp.heads.head_scan import plan_scan, scan
    from interp.heads.headwise import headwise_cache, read_pattern
    from interp.heads.table import HeadScores

_NAMES = {"plan_scan": "interp.heads.head_scan", "scan": "interp.heads.head_scan", "HeadScores": "interp.heads.table",
          "compressed": "interp.heads.compression", "headwise_cache": "interp.heads.headwise",
          "read_pattern": "interp.heads.headwise"}


def __getattr__(name: str) -> Any:  # loaded on first use, so the CLI's parser stays light
    if name not in _NAMES:
        raise AttributeError(f"module 'interp.heads' has no attribute {name!r}")
    value = getattr(importlib.import_module(_NAMES[name]), name)
    globals()[name] = value
    return value


__all__ = ["SCORES", "HeadScores", "compressed", "headwise_cache", "plan_scan", "read_pattern", "scan"]
