"""Target keys of the attention-mass rules, as sparse (batch, row, key) triples.

A rule says, for each query row, which keys count as "the" target: the previous token, an
earlier copy of the current token, the token after an earlier occurrence of the current
n-gram, a given key span, the first real token, or the query itself. Most head scores are the
attention mass on such a sparse set, so the masses need only these dot products and the row's
log-sum-exp, never a full row of probabilities.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

NGRAM_ORDERS = (1, 2, 3, 4)
RULES = ("prev", "dup", *(f"ngram{n}" for n in NGRAM_ORDERS), "span", "bos", "self")
TOKEN_RULES = ("dup", *(f"ngram{n}" for n in NGRAM_ORDERS))


@dataclass(frozen=True)
class Pairs:
    """Target keys: ``key[i]`` is a target of row ``row[i]`` (an index into the rows) in ``batch[i]``."""

    batch: torch.Tensor
    row: torch.Tensor
    key: torch.Tensor

    def __len__(self) -> int:
        return int(self.key.numel())

    def keep(self, mask: torch.Tensor) -> Pairs:
        return Pairs(self.batch[mask], self.row[mask], self.key[mask])


def _empty(device: torch.device) -> Pairs:
    z = torch.zeros(0, dtype=torch.long, device=device)
    return Pairs(z, z, z)


def _cat(parts: list[Pairs], device: torch.device) -> Pairs:
    if not parts:
        return _empty(device)
    return Pairs(*(torch.cat([getattr(p, f) for p in parts]) for f in ("batch", "row", "key")))


def masked_tokens(tokens: torch.Tensor, key_mask: torch.Tensor | None) -> torch.Tensor:
    """Padding positions get distinct negative ids so they never match anything."""
    if key_mask is None:
        return tokens
    unique = -1 - torch.arange(tokens.shape[1], device=tokens.device).expand_as(tokens)
    return torch.where(key_mask.bool(), tokens, unique)


def earlier_copies(tokens: torch.Tensor, q_abs: torch.Tensor, shift: int = 0, chunk: int = 1024) -> Pairs:
    """Keys ``j < q - shift`` with ``tokens[j] == tokens[q - shift]`` (``shift`` 0: duplicates)."""
    parts = []
    positions = torch.arange(tokens.shape[1], device=tokens.device)
    for b in range(tokens.shape[0]):
        for start in range(0, q_abs.shape[1], chunk):
            q = q_abs[b, start : start + chunk] - shift
            ok = q >= 0
            current = tokens[b, q.clamp(min=0)]
            eq = (current[:, None] == tokens[b][None, :]) & (positions[None, :] < q[:, None]) & ok[:, None]
            r, j = eq.nonzero(as_tuple=True)
            parts.append(Pairs(torch.full_like(r, b), r + start, j))
    return _cat(parts, tokens.device)


def rule_pairs(
    rule: str,
    q_abs: torch.Tensor,
    *,
    tokens: torch.Tensor | None = None,
    spans: torch.Tensor | None = None,
    key_mask: torch.Tensor | None = None,
) -> Pairs:
    """Target keys of ``rule`` for query rows at absolute key positions ``q_abs`` ``[batch, rows]``.

    ``ngram{n}``: keys ``j`` whose previous n tokens equal the n tokens ending at the query,
    i.e. the token that followed an earlier occurrence of the current n-gram (``ngram1`` is
    the induction target). Visibility (causal, window, padding) is applied by the caller.
    """
    device = q_abs.device
    b, r = q_abs.shape
    bi = torch.arange(b, device=device)[:, None].expand(b, r)
    ri = torch.arange(r, device=device)[None, :].expand(b, r)
    if rule in ("prev", "self"):
        key = q_abs - (1 if rule == "prev" else 0)
        ok = key >= 0
        return Pairs(bi[ok], ri[ok], key[ok])
    if rule == "bos":
        first = (
            torch.zeros(b, dtype=torch.long, device=device)
            if key_mask is None
            else key_mask.long().argmax(dim=1)
        )
        key = first[:, None].expand(b, r)
        return Pairs(bi.reshape(-1), ri.reshape(-1), key.reshape(-1))
    if rule == "span":
        assert spans is not None
        lengths = (spans[..., 1] - spans[..., 0]).clamp(min=0)  # [b, r]
        total = int(lengths.sum())
        flat_b, flat_r = bi.reshape(-1), ri.reshape(-1)
        reps = lengths.reshape(-1)
        pb, pr = flat_b.repeat_interleave(reps), flat_r.repeat_interleave(reps)
        starts = spans[..., 0].reshape(-1).repeat_interleave(reps)
        offsets = torch.arange(total, device=device) - torch.cumsum(reps, 0).repeat_interleave(reps) + reps.repeat_interleave(reps)
        return Pairs(pb, pr, starts + offsets)
    assert tokens is not None
    toks = masked_tokens(tokens, key_mask)
    if rule == "dup":
        return earlier_copies(toks, q_abs)
    n = int(rule.removeprefix("ngram"))
    pairs = earlier_copies(toks, q_abs)  # (row, j'): tokens[j'] == tokens[q], j' < q
    for m in range(1, n):
        q_m = q_abs[pairs.batch, pairs.row] - m
        j_m = pairs.key - m
        ok = (q_m >= 0) & (j_m >= 0)
        ok &= toks[pairs.batch, q_m.clamp(min=0)] == toks[pairs.batch, j_m.clamp(min=0)]
        pairs = pairs.keep(ok)
    return Pairs(pairs.batch, pairs.row, pairs.key + 1)


@dataclass(frozen=True)
class Bucket:
    """Rows with similar target counts, their targets padded to a common width ``L``."""

    out: torch.Tensor  # [n] flat row index b * R + r
    q_index: torch.Tensor  # [n] flat query index b * pos_q + row
    k_index: torch.Tensor  # [n, L] flat key index b * pos_k + key (0 where padded)
    valid: torch.Tensor  # [n, L] False where padded


@dataclass(frozen=True)
class RulePlan:
    """A rule's visible targets laid out for batched gathers; reusable for every layer."""

    buckets: list[Bucket]
    count: torch.Tensor  # [b, R] visible targets per row


def plan_rule(pairs: Pairs, rows: torch.Tensor, pos_q: int, pos_k: int, max_cells: int = 1 << 15) -> RulePlan:
    """Group visible target pairs by row, rows by power-of-two target count, in chunks of ``max_cells``."""
    b, r = rows.shape
    device = rows.device
    out = pairs.batch * r + pairs.row
    order = torch.argsort(out, stable=True)
    out, key = out[order], (pairs.batch * pos_k + pairs.key)[order]
    count = torch.bincount(out, minlength=b * r)
    start = torch.cumsum(count, 0) - count
    slot = torch.arange(len(out), device=device) - start[out]  # position of each pair within its row
    width = torch.where(count > 0, 2 ** torch.log2(count.clamp(min=1).float()).ceil().long(), 0)
    buckets = []
    for w in sorted(set(width[count > 0].tolist())):
        members = (width == w).nonzero(as_tuple=True)[0]
        step = max(1, max_cells // w)
        for s0 in range(0, len(members), step):
            rows_out = members[s0 : s0 + step]
            local = torch.full((b * r,), -1, dtype=torch.long, device=device)
            local[rows_out] = torch.arange(len(rows_out), device=device)
            sel = local[out] >= 0
            k_index = torch.zeros(len(rows_out), w, dtype=torch.long, device=device)
            valid = torch.zeros(len(rows_out), w, dtype=torch.bool, device=device)
            k_index[local[out[sel]], slot[sel]] = key[sel]
            valid[local[out[sel]], slot[sel]] = True
            q_index = (rows_out // r) * pos_q + rows.reshape(-1)[rows_out]
            buckets.append(Bucket(rows_out, q_index, k_index, valid))
    return RulePlan(buckets, count.view(b, r))
