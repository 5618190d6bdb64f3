"""What both implementations of ``attention_stats`` share: the checked ``Problem`` they are given
and the ``AttentionStats`` they return (``interp.kernels.attention_stats`` builds the problem and
picks the PyTorch or the Triton path, ``interp.kernels.triton_stats``)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from interp.core.masks import visible


@dataclass
class AttentionStats:
    """Statistics per (batch, head, row); ``rows`` holds each row's query index.

    Attributes:
        lse: each row's log-sum-exp of the scores.
        mass: attention mass on each rule's targets, by rule.
        n_targets: how many targets each row has, by rule.
        max_prob: the largest probability of each row.
        argmax: the key of that probability.
        entropy: each row's entropy.
        topk_prob: the top-k probabilities.
        topk_index: their keys.
    """

    rows: torch.Tensor  # [b, R]
    lse: torch.Tensor  # [b, H, R] log-sum-exp of the row's scaled (soft-capped) scores
    mass: dict[str, torch.Tensor] = field(default_factory=dict)  # rule -> [b, H, R]
    n_targets: dict[str, torch.Tensor] = field(default_factory=dict)  # rule -> [b, R] visible targets
    max_prob: torch.Tensor | None = None  # [b, H, R]
    argmax: torch.Tensor | None = None  # [b, H, R] key index
    entropy: torch.Tensor | None = None  # [b, H, R] nats
    topk_prob: torch.Tensor | None = None  # [b, H, R, k]
    topk_index: torch.Tensor | None = None  # [b, H, R, k]


@dataclass(frozen=True)
class Problem:
    """Validated inputs shared by both implementations."""

    q: torch.Tensor  # [b, H, Pq, d]
    k: torch.Tensor  # [b, Hkv, Pk, d]
    scaling: float
    rows: torch.Tensor  # [b, R] query indices
    q_abs: torch.Tensor  # [b, R] the rows' key positions
    key_mask: torch.Tensor | None  # [b, Pk] bool
    sliding_window: int | None
    softcap: float | None
    causal: bool

    @property
    def group(self) -> int:
        return self.q.shape[1] // self.k.shape[1]

    def visible(self, q_abs: torch.Tensor, keys: torch.Tensor, batch: torch.Tensor | None = None) -> torch.Tensor:
        """Whether each key is visible from its query (causal, window, padding); broadcasts."""
        ok = visible(q_abs, keys, causal=self.causal, sliding_window=self.sliding_window)
        ok &= (keys >= 0) & (keys < self.k.shape[2])
        if self.key_mask is not None:
            if batch is None:  # dense: q_abs [b, B, 1], keys [1, 1, K]
                ok &= self.key_mask[:, None, :]
            else:
                ok &= self.key_mask[batch, keys.clamp(0, self.k.shape[2] - 1)]
        return ok

    def logits(self, dots: torch.Tensor) -> torch.Tensor:
        """Raw q·k products to the scores the softmax sees (scaled, then soft-capped)."""
        s = dots * self.scaling
        return torch.tanh(s / self.softcap) * self.softcap if self.softcap is not None else s
