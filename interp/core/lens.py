"""The logit lens: each layer's residual stream read through the final norm and unembedding."""

from __future__ import annotations

import pandas as pd
import torch

from interp.core.model import Inputs, Model


def logit_lens(model: Model, inputs: Inputs, *, position: int = -1, k: int = 3) -> pd.DataFrame:
    """Top-``k`` next tokens predicted from every layer's ``hook_resid_post`` at ``position``.

    One row per (layer, rank) with columns layer, rank, token, token_id, prob; the last layer
    reproduces the model's own prediction.

    >>> logit_lens(interp.load("smollm2-135m"), "The capital of France is").query("rank == 0")  # doctest: +SKIP
    """
    with model.trace(inputs, sites="blocks.*.hook_resid_post", positions=[position]) as tr:
        pass
    norm = model.module(model.adapter.final_norm)
    unembed = model.module(model.adapter.unembed)
    rows = []
    with torch.no_grad():
        for layer in range(model.cfg.n_layers):
            resid = tr[f"blocks.{layer}.hook_resid_post"][0, 0].to(model.device)
            probs = torch.softmax(unembed(norm(resid)).float(), dim=-1)
            top = probs.topk(k)
            for rank, (p, t) in enumerate(zip(top.values.tolist(), top.indices.tolist(), strict=True)):
                rows.append(
                    {"layer": layer, "rank": rank, "token": model.tokenizer.decode([t]), "token_id": t, "prob": p}
                )
    return pd.DataFrame(rows)
