"""Dense float64 reference for attention statistics: explicit masks, explicit softmax, loops."""

from __future__ import annotations

import torch


def dense_probs(q, k, *, scaling, key_mask=None, sliding_window=None, softcap=None, causal=True):
    """Full [b, H, Pq, Pk] probabilities in float64, built the obvious way.

    ``causal=False`` lets every query see later keys too; a sliding window still bounds how far
    back a query looks (``qa - j < window``), as in ``attention_stats``.
    """
    q, k = q.double(), k.double()
    b, h, pq, _ = q.shape
    pk = k.shape[2]
    k = k.repeat_interleave(h // k.shape[1], dim=1)
    s = torch.einsum("bhid,bhjd->bhij", q, k) * scaling
    if softcap is not None:
        s = torch.tanh(s / softcap) * softcap
    allowed = torch.zeros(b, pq, pk, dtype=torch.bool)
    for bi in range(b):
        for i in range(pq):
            qa = i + pk - pq
            for j in range(pk):
                ok = (not causal or j <= qa) and (sliding_window is None or qa - j < sliding_window)
                ok = ok and (key_mask is None or bool(key_mask[bi, j]))
                allowed[bi, i, j] = ok
    s = s.masked_fill(~allowed[:, None], float("-inf"))
    return torch.softmax(s, dim=-1).nan_to_num(0.0), allowed


def target_mask(rule, tokens, b, i_abs, pk, key_mask=None, span=None, exclude=()):
    """Keys of ``rule`` for query at key position ``i_abs`` of item ``b``, by direct definition."""
    out = _target_mask(rule, tokens, b, i_abs, pk, key_mask, span)
    real = [True] * pk if key_mask is None else [bool(x) for x in key_mask[b]]
    if rule not in ("bos", "self"):  # exclusions leave the bos and self masses themselves alone
        if "bos" in exclude:
            out[real.index(True)] = False
        if "self" in exclude:
            out[i_abs] = False
    return out


def _target_mask(rule, tokens, b, i_abs, pk, key_mask, span):
    toks = tokens[b].tolist() if tokens is not None else None
    real = [True] * pk if key_mask is None else [bool(x) for x in key_mask[b]]
    out = torch.zeros(pk, dtype=torch.bool)
    for j in range(pk):
        if rule == "prev":
            out[j] = j == i_abs - 1
        elif rule == "self":
            out[j] = j == i_abs
        elif rule == "bos":
            out[j] = j == real.index(True)
        elif rule == "span":
            out[j] = span[0] <= j < span[1]
        elif rule == "dup":
            out[j] = j < i_abs and real[j] and real[i_abs] and toks[j] == toks[i_abs]
        else:
            n = int(rule[5:])
            # The n tokens before key j equal the n tokens ending at the query, earlier in the text.
            ok = j - 1 < i_abs and j - n >= 0 and i_abs - n + 1 >= 0
            for m in range(n):
                ok = ok and real[j - 1 - m] and real[i_abs - m] and toks[j - 1 - m] == toks[i_abs - m]
            out[j] = ok
    return out
