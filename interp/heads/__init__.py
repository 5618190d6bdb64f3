"""Head scans: previous-token, duplicate, induction, n-gram and retrieval heads, with causal checks.

>>> import interp
>>> model = interp.load("smollm2-135m")                                          # doctest: +SKIP
>>> scores = interp.heads.scan(model, ["induction", "prev_token"])               # doctest: +SKIP
>>> scores.top("induction", 5); scores.heatmap("induction"); scores.save("out")  # doctest: +SKIP
"""

from interp.heads.head_scan import SCORES, plan_scan, scan
from interp.heads.table import HeadScores

__all__ = ["SCORES", "HeadScores", "plan_scan", "scan"]
