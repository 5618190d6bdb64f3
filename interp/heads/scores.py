"""Head scores as reductions of kernel attention statistics. One function per score.

All pattern scores use TransformerLens's ``"mul"`` semantics (``head_detector.detect_head``):
the attention mass on the detection pattern divided by the total mass considered, summed over
the scored rows, where ``exclude_bos`` / ``exclude_current`` drop the first key and the query's
own key from both. Each function takes the per-layer ``AttentionStats`` of one batch (computed
with the rules it needs) and a ``[batch, rows]`` mask of rows to score, and returns the summed
numerator, denominator and row count per head, ``[3, heads]``, so batches and lengths add up before the
final division.
"""

from __future__ import annotations

import torch

from interp.kernels import AttentionStats

# Kernel rules each score needs, besides "bos"/"self" for the exclusions.
RULES_OF = {
    "prev_token": ["prev"],
    "duplicate": ["dup"],
    "induction": ["ngram1"],
    **{f"ngram{n}": [f"ngram{n}"] for n in (1, 2, 3, 4)},
}


def _mul(stats: AttentionStats, rule: str, rows: torch.Tensor, exclude_bos: bool, exclude_current: bool) -> torch.Tensor:
    mass = stats.mass[rule].double()  # [b, H, R]; targets already exclude bos/self keys
    total = torch.ones_like(mass)
    if exclude_bos:
        total = total - stats.mass["bos"].double()
    if exclude_current:
        total = total - stats.mass["self"].double()
    w = rows[:, None, :].to(mass.dtype)
    n = w.sum(dim=(0, 2)).expand(mass.shape[1])
    return torch.stack([(mass * w).sum(dim=(0, 2)), total.clamp(min=0).mul(w).sum(dim=(0, 2)), n])


# Below this mean considered mass per row a head attends (almost) only to excluded keys, and
# the ratio is rounding noise: such heads score 0.
MIN_MASS = 1e-4


def finish(parts: torch.Tensor) -> torch.Tensor:
    """Summed ``[3, ...]`` (numerator, considered mass, rows) to scores."""
    num, den, rows = parts
    ok = den > MIN_MASS * rows.clamp(min=1)
    return torch.where(ok, num / den.clamp(min=1e-300), torch.zeros_like(num))


def previous_token(stats: AttentionStats, rows: torch.Tensor, *, exclude_bos: bool = False,
                   exclude_current: bool = False) -> torch.Tensor:
    """Previous-token heads: mass on key i−1 (Olsson et al. 2022; TransformerLens's pattern)."""
    return _mul(stats, "prev", rows, exclude_bos, exclude_current)


def duplicate_token(stats: AttentionStats, rows: torch.Tensor, *, exclude_bos: bool = False,
                    exclude_current: bool = False) -> torch.Tensor:
    """Duplicate-token heads: mass on earlier copies of the current token (TransformerLens)."""
    return _mul(stats, "dup", rows, exclude_bos, exclude_current)


def induction(stats: AttentionStats, rows: torch.Tensor, *, exclude_bos: bool = False,
              exclude_current: bool = False) -> torch.Tensor:
    """Induction heads: mass on the token after an earlier copy of the current token.

    Olsson et al. (2022), "In-context Learning and Induction Heads": the prefix-matching score
    on repeated random tokens; TransformerLens's induction detection pattern.
    """
    return _mul(stats, "ngram1", rows, exclude_bos, exclude_current)


def ngram(stats: AttentionStats, rows: torch.Tensor, n: int, *, exclude_bos: bool = False,
          exclude_current: bool = False) -> torch.Tensor:
    """n-gram heads of order n: mass on the tokens that followed earlier occurrences of the
    current n-token context, over the rows that have at least one such occurrence.

    Akyürek et al. (2024), "In-Context Language Learning: Architectures and Algorithms": the
    static n-gram head's attention mask (their ``ngram=n``), scored TransformerLens-style.
    """
    rule = f"ngram{n}"
    matched = rows & (stats.n_targets[rule] > 0)
    return _mul(stats, rule, matched, exclude_bos, exclude_current)
