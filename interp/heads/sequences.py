"""Probe inputs for head scans: repeated random tokens and windows of natural text."""

from __future__ import annotations

import torch

from interp.core.model import Model
from interp.errors import PromptTooLongError
from interp.models.corpus import text as corpus_text


def ordinary_token_ids(model: Model) -> torch.Tensor:
    """Token ids that are not special tokens (random sequences are drawn from these)."""
    vocab = min(model.cfg.d_vocab, len(model.tokenizer)) if hasattr(model.tokenizer, "__len__") else model.cfg.d_vocab
    special = set(getattr(model.tokenizer, "all_special_ids", []) or [])
    keep = torch.ones(vocab, dtype=torch.bool)
    keep[[i for i in special if i < vocab]] = False
    return keep.nonzero(as_tuple=True)[0]


def bos_id(model: Model) -> int | None:
    return getattr(model.tokenizer, "bos_token_id", None)


def repeated_random(model: Model, length: int, samples: int, seed: int) -> torch.Tensor:
    """``[samples, (1 +) 2·length]``: a BOS token where the model has one, then r, then r again.

    The protocol of Olsson et al. (2022): uniformly random ordinary tokens, repeated once, so
    any above-chance prediction of the second copy comes from in-context copying.
    """
    bos = bos_id(model)
    n = 2 * length + (bos is not None)
    if n > model.cfg.n_ctx:
        raise PromptTooLongError(
            f"repeated sequences of length {length} need {n} tokens; {model.name} has a context window "
            f"of {model.cfg.n_ctx}: use lengths up to {(model.cfg.n_ctx - 1) // 2}"
        )
    pool = ordinary_token_ids(model)
    g = torch.Generator().manual_seed(seed)
    r = pool[torch.randint(len(pool), (samples, length), generator=g)]
    parts = [r, r] if bos is None else [torch.full((samples, 1), bos), r, r]
    return torch.cat(parts, dim=1)


def shipped_text_ids(model: Model, tokens: int, what: str = "windows", name: str = "alice") -> torch.Tensor:
    """The shipped text's token ids, once ``what`` of ``tokens`` tokens are known to fit both the
    model's context window and the text (``PromptTooLongError`` otherwise)."""
    if tokens > model.cfg.n_ctx:
        raise PromptTooLongError(f"{what} of {tokens} tokens exceed {model.name}'s context window of {model.cfg.n_ctx}")
    ids = model.tokenizer(corpus_text(name), return_tensors="pt")["input_ids"][0]
    if tokens > len(ids):
        raise PromptTooLongError(f"the shipped text has {len(ids)} tokens, fewer than the {tokens} asked for")
    return ids


def natural_text(model: Model, tokens: int, samples: int, seed: int, name: str = "alice") -> torch.Tensor:
    """``[samples, tokens]`` windows of the shipped public-domain text at seeded offsets."""
    ids = shipped_text_ids(model, tokens, name=name)
    g = torch.Generator().manual_seed(seed)
    starts = torch.randint(0, len(ids) - tokens + 1, (samples,), generator=g)
    return torch.stack([ids[s : s + tokens] for s in starts.tolist()])
