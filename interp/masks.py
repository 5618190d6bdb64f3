"""The attention mask, written once: which keys a query may read.

Patterns (``interp.attention_pattern``), attention-edge knockout (``circuits.knockout``) and the
kernels' PyTorch path build their masks here; the Triton kernel applies the same two rules in
its key loop (``kernels/triton_stats.py``: ``CAUSAL``, ``HAS_WINDOW``). Key padding is each
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
