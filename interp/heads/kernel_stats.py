"""Kernel attention statistics for every head of a model, computed inside one forward pass.

Each layer's final queries and keys are reduced by ``interp.kernels.attention_stats`` as the
forward pass reaches that layer, then dropped: no attention pattern is ever stored. Where the
model runs SDPA on the CPU, its fused kernel hands over the rows' log-sum-exp with the output,
so masses on sparse target sets cost little more than the forward pass itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from interp.core.inputs import Inputs
from interp.core.model import Model
from interp.errors import BadInputError
from interp.kernels import AttentionStats, attention_stats


def head_stats(
    model: Model,
    inputs: Inputs,
    *,
    rules: Sequence[str] = ("prev", "ngram1"),
    rows: torch.Tensor | Sequence[int] | None = None,
    row_stats: bool = False,
    topk: int = 0,
    layers: Sequence[int] | None = None,
    spans: torch.Tensor | Sequence[torch.Tensor] | None = None,
    exclude: Sequence[str] = (),
    backend: str = "auto",
    block: int = 128,
) -> dict[int, AttentionStats]:
    """Per-layer ``AttentionStats`` (all query heads) for one batch of inputs.

    ``rules``, ``rows``, ``row_stats``, ``topk``, ``spans``, ``exclude`` and ``backend`` are those of
    ``interp.kernels.attention_stats``; token ids and padding come from the inputs. The forward
    pass stops after the last layer in ``layers``. Results are moved to the CPU.

    >>> stats = head_stats(model, "a b c a b c", rules=["prev", "ngram1"])     # doctest: +SKIP
    >>> stats[3].mass["ngram1"].shape                                         # doctest: +SKIP
    torch.Size([1, 9, 7])
    """
    tokens = model.to_tokens(inputs)
    ids, mask = tokens["input_ids"], tokens["attention_mask"]
    key_mask = None if bool(mask.all()) else mask.bool()
    wanted = sorted({model.check_layer(layer) for layer in (layers if layers is not None else range(model.cfg.n_layers))})
    rows_t = None if rows is None else torch.as_tensor(rows, dtype=torch.long, device=ids.device)
    results: dict[int, AttentionStats] = {}
    span_list = [spans] if spans is None or isinstance(spans, torch.Tensor) else list(spans)
    if len(span_list) > 1 and "span" not in rules:
        raise BadInputError("several spans were given but rules has no 'span'")
    plans: dict[Any, dict] = {}  # target layouts depend on the tokens and the window, not the layer

    def observe(layer: int, q: torch.Tensor, k: torch.Tensor, spec: Any, lse: torch.Tensor | None) -> None:
        if lse is not None and rows_t is not None:
            r = rows_t.expand(q.shape[0], -1) if rows_t.ndim == 1 else rows_t
            lse = lse.gather(2, r[:, None, :].expand(-1, q.shape[1], -1))
        stats = attention_stats(
            q, k, scaling=spec.scaling, rules=rules, tokens=ids, spans=span_list[0], rows=rows_t, key_mask=key_mask,
            sliding_window=spec.sliding_window, softcap=spec.softcap, row_stats=row_stats, topk=topk,
            lse=None if row_stats else lse, exclude=exclude, backend=backend, block=block,
            plan=plans.setdefault(spec.sliding_window, {}),
        )
        for i, more in enumerate(span_list[1:], 1):  # the same rows' log-sum-exp, more target keys
            extra = attention_stats(q, k, scaling=spec.scaling, rules=["span"], spans=more, rows=rows_t,
                                    key_mask=key_mask, sliding_window=spec.sliding_window, softcap=spec.softcap,
                                    row_stats=False, lse=stats.lse, backend=backend, block=block,
                                    plan=plans.setdefault((spec.sliding_window, i), {}))
            stats.mass["span"] = stats.mass["span"] + extra.mass["span"]
            stats.n_targets["span"] = stats.n_targets["span"] + extra.n_targets["span"]
        results[layer] = _to_cpu(stats)

    with model.trace(tokens, observe=observe, observe_layers=wanted, stop_after=wanted[-1]):
        pass
    return results


def _to_cpu(stats: AttentionStats) -> AttentionStats:
    def cpu(t):
        return None if t is None else t.cpu()

    return AttentionStats(
        rows=stats.rows.cpu(),
        lse=stats.lse.cpu(),
        mass={k: v.cpu() for k, v in stats.mass.items()},
        n_targets={k: v.cpu() for k, v in stats.n_targets.items()},
        max_prob=cpu(stats.max_prob),
        argmax=cpu(stats.argmax),
        entropy=cpu(stats.entropy),
        topk_prob=cpu(stats.topk_prob),
        topk_index=cpu(stats.topk_index),
    )
