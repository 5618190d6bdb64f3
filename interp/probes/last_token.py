"""Many runs that differ only at the last token, for the price of one prefix pass.

Layer localisation, DAS training and knob sweeps all intervene at the last prompt position
only. Earlier positions are then the same in every run, so their keys and values are computed
once per batch (a KV cache) and each run is a one-token step over that cache: about as cheap
as decoding one token instead of a forward over the whole prompt.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from interp.core.kv_cache import fork, run_cached
from interp.core.model import Model
from interp.errors import InterpError

# Interventions for one batch, given the batch's item indices.
BatchInterventions = Callable[[np.ndarray], dict[str, Any] | None]


@dataclass
class _Batch:
    index: np.ndarray  # item indices
    last: torch.Tensor  # [b, 1] last token ids
    mask: torch.Tensor  # [b, pos] attention mask of the whole prompt
    cache: Any  # KV cache of every position but the last
    choices: torch.Tensor  # [b, n_choices] token ids whose logits are read


class LastTokenRuns:
    """Left-padded prompts with their prefix KV caches; ``logits_of(choices)`` per run.

    ``prompts`` are texts (left-padded in batches) or a ``[prompts, pos]`` tensor of token ids;
    ``choices[i]`` are the token ids whose next-token logits are read for prompt ``i``.

    Args:
        batch_size: prompts per forward pass.

    >>> runs = LastTokenRuns(model, prompts, choices)                          # doctest: +SKIP
    >>> runs.choice_logits({"blocks.10.hook_resid_post": steer(u, value=3.0)})  # doctest: +SKIP
    """

    def __init__(self, model: Model, prompts: list[str] | torch.Tensor, choices: torch.Tensor | np.ndarray | Sequence[Sequence[int]], *, batch_size: int = 16):
        choices = torch.as_tensor(choices, dtype=torch.long)
        if choices.ndim != 2 or len(choices) != len(prompts):
            raise InterpError(f"choices must be [prompts, n] token ids; got {tuple(choices.shape)} for {len(prompts)} prompts")
        if len(prompts) == 0:
            raise InterpError("no prompts to run")
        self.model, self.n = model, len(prompts)
        self.batches: list[_Batch] = []
        for s in range(0, len(prompts), batch_size):
            tokens = model.to_tokens(prompts[s : s + batch_size])
            ids, mask = tokens["input_ids"], tokens["attention_mask"]
            if ids.shape[1] < 2:
                raise InterpError("each prompt needs at least two tokens")
            with torch.no_grad():
                _, cache = run_cached(model.hf, input_ids=ids[:, :-1], attention_mask=mask[:, :-1], logits_to_keep=1)
            idx = np.arange(s, s + len(ids))
            self.batches.append(_Batch(idx, ids[:, -1:], mask, cache, choices[idx].to(model.device)))

    def _step(self, batch: _Batch, interventions: dict[str, Any] | None, sites: Any = (),
              grad: bool = False) -> tuple[torch.Tensor, Any]:
        """The last position's logits of the batch's choice tokens ``[b, n_choices]``, and the trace.

        Only those logits are computed: the final hidden state times the choices' unembedding rows
        (with the family's final soft-cap), not the whole vocabulary (262k tokens for Gemma 3).
        """
        hf = self.model.hf
        with self.model.trace(sites=sites, interventions=interventions) as tr, torch.set_grad_enabled(grad):
            # a step appends to the cache; each run starts from a copy of the prefix's
            out, _ = run_cached(hf.base_model, fork(batch.cache), input_ids=batch.last, attention_mask=batch.mask)
            h = out.last_hidden_state[:, -1]
            head = self.model.module(self.model.adapter.unembed)
            w = self.model.weight(self.model.adapter.unembed)[batch.choices]  # [b, n_choices, d]
            logits = torch.einsum("bd,bcd->bc", h.to(w.dtype), w)
            bias: torch.Tensor | None = getattr(head, "bias", None)
            if bias is not None:
                logits = logits + bias[batch.choices]
            cap = getattr(hf.config, "final_logit_softcapping", None)
            if cap:
                logits = torch.tanh(logits / cap) * cap
        return logits, tr

    def choice_logits(self, interventions: dict[str, Any] | BatchInterventions | None = None) -> np.ndarray:
        """``[prompts, n_choices]`` logits of each prompt's choice tokens under ``interventions``
        (a dict for every batch, or a function of the batch's item indices returning one)."""
        out = []
        for b in self.batches:
            iv = interventions(b.index) if callable(interventions) else interventions
            logits, _ = self._step(b, iv)
            out.append(logits.float().cpu().numpy())
        return np.concatenate(out)

    def capture(self, sites: str | list[str]) -> dict[str, torch.Tensor]:
        """Each site's value at the last position, ``[prompts, ...]`` (float32, CPU)."""
        parts: dict[str, list[torch.Tensor]] = {}
        for b in self.batches:
            _, tr = self._step(b, None, sites=sites)
            for name in tr.keys():
                parts.setdefault(name, []).append(tr[name][:, -1].float().cpu())
        return {k: torch.cat(v) for k, v in parts.items()}

    def training_steps(self, interventions: BatchInterventions, rng: np.random.Generator) -> Iterator[torch.Tensor]:
        """Endless ``[b, n_choices]`` choice logits with gradients, one random batch per step."""
        while True:
            b = self.batches[int(rng.integers(len(self.batches)))]
            logits, _ = self._step(b, interventions(b.index), grad=True)
            yield logits.float()
