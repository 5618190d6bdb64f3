"""Every statistic against a dense float64 reference on fresh random inputs."""

from __future__ import annotations

import importlib.util
import os
import zlib

import pytest
import torch

from interp.errors import OutOfRangeError, UnknownNameError
from interp.kernels import RULES, attention_stats

from .reference import dense_probs, target_mask

# Triton runs under its CPU interpreter here (TRITON_INTERPRET=1) and natively on CUDA.
TRITON = importlib.util.find_spec("triton") is not None and (
    os.environ.get("TRITON_INTERPRET") == "1" or torch.cuda.is_available()
)
BACKENDS = ["torch", pytest.param("triton", marks=pytest.mark.skipif(not TRITON, reason="needs triton (TRITON_INTERPRET=1 on CPU)"))]

CASES = {
    # name: (batch, q_heads, kv_heads, pos_q, pos_k, d, window, softcap, padded, causal)
    "mha": (2, 4, 4, 40, 40, 16, None, None, False, True),
    "gqa_padded": (2, 6, 2, 37, 37, 8, None, None, True, True),
    "mqa_window": (1, 4, 1, 45, 45, 16, 9, None, False, True),
    "softcap_window_padded": (3, 4, 2, 33, 33, 8, 12, 2.0, True, True),
    "decode_rows": (2, 4, 2, 3, 30, 16, None, None, False, True),
    # Bidirectional: every query also sees later keys (more than one key block of 32 here).
    "noncausal_gqa_padded": (2, 4, 2, 36, 36, 8, None, None, True, False),
    "noncausal_window_softcap": (1, 4, 1, 34, 34, 8, 7, 2.0, False, False),
    "noncausal_decode": (2, 2, 1, 3, 35, 8, None, None, False, False),
}


def seed_of(case: str) -> int:
    """A seed fixed across processes (``hash`` of a str changes with PYTHONHASHSEED)."""
    return zlib.crc32(case.encode()) % 1000


def make(case, seed):
    b, h, hkv, pq, pk, d, window, softcap, padded, causal = CASES[case]
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(b, h, pq, d, generator=g)
    k = torch.randn(b, hkv, pk, d, generator=g)
    # Few distinct tokens, and a repeat, so duplicate and n-gram targets are common.
    base = torch.randint(0, 4, (b, pk // 2 + 1), generator=g)
    tokens = torch.cat([base, base], dim=1)[:, :pk]
    key_mask = None
    if padded:
        key_mask = torch.ones(b, pk, dtype=torch.bool)
        for i in range(1, b):
            key_mask[i, : 3 * i] = False  # left padding
    return q, k, tokens, key_mask, dict(scaling=d**-0.5, sliding_window=window, softcap=softcap, causal=causal)


def check_against_reference(q, k, tokens, key_mask, spec, backend, *, rows=None, topk=3, rules=RULES, block=7):
    """Run ``attention_stats`` and compare every statistic, row by row, with ``dense_probs``."""
    b, h, pq, _ = q.shape
    pk = k.shape[2]
    rows_t = torch.arange(pq).expand(b, pq) if rows is None else torch.as_tensor(rows).expand(b, -1)
    spans = torch.stack([torch.tensor([[r % 5, r % 5 + 4] for r in item.tolist()]) for item in rows_t])
    stats = attention_stats(
        q, k, **spec, rules=list(rules), tokens=tokens, spans=spans, key_mask=key_mask, rows=rows, topk=topk,
        backend=backend, block=block,
    )
    assert torch.equal(stats.rows, rows_t)
    probs, allowed = dense_probs(q, k, key_mask=key_mask, **spec)
    probs = probs.gather(2, rows_t[:, None, :, None].expand(b, h, -1, pk))  # [b, H, R, K]
    allowed = allowed.gather(1, rows_t[:, :, None].expand(-1, -1, pk))  # [b, R, K]
    n_rows = rows_t.shape[1]
    real_rows = allowed.any(-1)  # padding queries see nothing under a causal mask: not compared
    assert bool(real_rows.any())
    for rule in rules:
        for bi in range(b):
            for ri in range(n_rows):
                if not real_rows[bi, ri]:
                    continue
                i_abs = int(rows_t[bi, ri]) + pk - pq
                tm = target_mask(rule, tokens, bi, i_abs, pk, key_mask, spans[bi, ri].tolist())
                expected = probs[bi, :, ri][:, tm].sum(-1)
                assert torch.allclose(stats.mass[rule][bi, :, ri].double(), expected, atol=1e-5), (rule, bi, ri)
                assert int(stats.n_targets[rule][bi, ri]) == int((tm & allowed[bi, ri]).sum()), (rule, bi, ri)
    sel = real_rows[:, None].expand(b, h, n_rows)
    p = probs[sel]  # [n, K]
    got = lambda t: t[sel]  # noqa: E731
    torch.testing.assert_close(got(stats.lse).double(), torch.logsumexp(
        dense_scores(q, k, spec, allowed, rows_t)[sel], -1), atol=1e-5, rtol=0)
    assert torch.allclose(got(stats.max_prob).double(), p.max(-1).values, atol=1e-5)
    assert torch.equal(got(stats.argmax), p.argmax(-1))
    ent = -(p * p.clamp_min(1e-300).log()).sum(-1)
    assert torch.allclose(got(stats.entropy).double(), ent, atol=1e-5)
    if topk:
        top = p.topk(topk, dim=-1)
        assert stats.topk_prob is not None and stats.topk_index is not None
        assert stats.topk_prob.shape == (b, h, n_rows, topk)
        assert torch.allclose(got(stats.topk_prob).double(), top.values, atol=1e-5)
        positive = top.values > 0  # among zero-probability keys the order is undefined
        assert torch.equal(got(stats.topk_index)[positive], top.indices[positive])
    return stats


def dense_scores(q, k, spec, allowed, rows_t):
    """The chosen rows' masked float64 scores [b, H, R, K], for the log-sum-exp."""
    h = q.shape[1]
    kk = k.double().repeat_interleave(h // k.shape[1], dim=1)
    qq = q.double().gather(2, rows_t[:, None, :, None].expand(-1, h, -1, q.shape[3]))
    s = torch.einsum("bhid,bhjd->bhij", qq, kk) * spec["scaling"]
    if spec["softcap"] is not None:
        s = torch.tanh(s / spec["softcap"]) * spec["softcap"]
    return s.masked_fill(~allowed[:, None], float("-inf"))


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("backend", BACKENDS)
def test_matches_dense_reference(case, backend):
    q, k, tokens, key_mask, spec = make(case, seed=seed_of(case))
    check_against_reference(q, k, tokens, key_mask, spec, backend)


# Subsets of rows (shared [R] and per item [b, R]), and top-k at its limit, on both backends.
SUBSETS = {
    "shared_rows": ("gqa_padded", [36, 18, 5, 0], 3),
    "item_rows": ("softcap_window_padded", [[32, 10, 2], [7, 32, 20], [31, 12, 9]], 2),
    "decode_last_row": ("decode_rows", [2], 1),
    "noncausal_rows": ("noncausal_gqa_padded", [0, 35, 17], 8),
    "topk8": ("mqa_window", [44, 30, 8, 3], 8),
    "topk8_gqa": ("gqa_padded", [36, 20, 9], 8),
}


@pytest.mark.parametrize("subset", sorted(SUBSETS))
@pytest.mark.parametrize("backend", BACKENDS)
def test_row_subsets_and_topk_limit_match_dense_reference(subset, backend):
    case, rows, topk = SUBSETS[subset]
    q, k, tokens, key_mask, spec = make(case, seed=seed_of(subset))
    stats = check_against_reference(q, k, tokens, key_mask, spec, backend, rows=torch.tensor(rows), topk=topk,
                                    rules=("prev", "dup", "ngram1", "ngram3", "span", "bos"))
    assert stats.lse.shape[-1] == torch.tensor(rows).shape[-1]


@pytest.mark.parametrize("backend", BACKENDS)
def test_excluded_bos_and_self_keys(backend):
    q, k, tokens, key_mask, spec = make("gqa_padded", seed=11)
    tokens = tokens.clone()
    tokens[:, 6] = tokens[:, 5]  # a repeat makes the query's own key an induction target
    b, h, pq, _ = q.shape
    rules = ["prev", "dup", "ngram1", "ngram2", "bos", "self"]
    stats = attention_stats(q, k, **spec, rules=rules, tokens=tokens, key_mask=key_mask, exclude=["bos", "self"], backend=backend)
    probs, allowed = dense_probs(q, k, key_mask=key_mask, **spec)
    for rule in rules:
        for bi in range(b):
            for i in range(pq):
                if not allowed[bi, i].any():
                    continue
                tm = target_mask(rule, tokens, bi, i, pq, key_mask, exclude=("bos", "self"))
                assert torch.allclose(stats.mass[rule][bi, :, i].double(), probs[bi, :, i][:, tm].sum(-1), atol=1e-5)


@pytest.mark.parametrize("case", ["mha", "gqa_padded", "mqa_window"])
def test_row_subset_and_mass_only_paths_agree(case):
    q, k, tokens, key_mask, spec = make(case, seed=3)
    pq = q.shape[2]
    rows = torch.tensor([pq - 1, pq // 2, 5])
    full = attention_stats(q, k, **spec, rules=["prev", "ngram2"], tokens=tokens, key_mask=key_mask)
    some = attention_stats(q, k, **spec, rules=["prev", "ngram2"], tokens=tokens, key_mask=key_mask, rows=rows, row_stats=False)
    for rule in ("prev", "ngram2"):
        torch.testing.assert_close(some.mass[rule], full.mass[rule][:, :, rows], atol=1e-6, rtol=0)
    torch.testing.assert_close(some.lse, full.lse[:, :, rows], atol=1e-5, rtol=0)


def test_fast_lse_path_matches_blocked():
    q, k, tokens, _, spec = make("mha", seed=5)
    fast = attention_stats(q, k, **spec, rules=["ngram1", "prev"], tokens=tokens, row_stats=False)
    exact = attention_stats(q, k, **spec, rules=["ngram1", "prev"], tokens=tokens, row_stats=True)
    torch.testing.assert_close(fast.lse, exact.lse, atol=1e-5, rtol=0)
    torch.testing.assert_close(fast.mass["ngram1"], exact.mass["ngram1"], atol=1e-6, rtol=0)


def test_bad_input():
    q, k = torch.randn(1, 4, 8, 4), torch.randn(1, 3, 8, 4)
    with pytest.raises(ValueError, match="multiple of kv heads"):
        attention_stats(q, k, scaling=1.0)
    k = torch.randn(1, 2, 8, 4)
    with pytest.raises(UnknownNameError, match="unknown rule 'induction'"):
        attention_stats(q, k, scaling=1.0, rules=["induction"])
    with pytest.raises(ValueError, match="need tokens"):
        attention_stats(q, k, scaling=1.0, rules=["dup"])
    with pytest.raises(OutOfRangeError, match="row 8"):
        attention_stats(q, k, scaling=1.0, rows=[8])
    with pytest.raises(ValueError, match="topk"):
        attention_stats(q, k, scaling=1.0, topk=9)
    with pytest.raises(ValueError, match="spans of shape"):
        attention_stats(q, k, scaling=1.0, rules=["span"])


def test_triton_backend_without_triton_names_the_install(monkeypatch):
    from interp.errors import MissingDependencyError
    from interp.kernels import triton_stats

    monkeypatch.setattr(triton_stats, "triton", None)
    q, k = torch.randn(1, 2, 8, 4), torch.randn(1, 2, 8, 4)
    with pytest.raises(MissingDependencyError, match=r"triton.*pip install 'interp\[gpu\]'"):
        attention_stats(q, k, scaling=0.5, backend="triton")
    with pytest.raises(UnknownNameError, match="unknown backend 'cuda'"):
        attention_stats(q, k, scaling=0.5, backend="cuda")


def test_plan_reused_across_calls_gives_fresh_results():
    q, k, tokens, key_mask, spec = make("gqa_padded", seed=7)
    plan: dict = {}
    first = attention_stats(q, k, **spec, rules=["dup", "ngram1"], tokens=tokens, key_mask=key_mask, plan=plan)
    assert set(plan) == {"dup", "ngram1"}
    q2, k2 = torch.randn_like(q), torch.randn_like(k)  # another layer: same tokens, new q and k
    reused = attention_stats(q2, k2, **spec, rules=["dup", "ngram1"], tokens=tokens, key_mask=key_mask, plan=plan)
    fresh = attention_stats(q2, k2, **spec, rules=["dup", "ngram1"], tokens=tokens, key_mask=key_mask)
    for rule in ("dup", "ngram1"):
        torch.testing.assert_close(reused.mass[rule], fresh.mass[rule])
        assert not torch.allclose(reused.mass[rule], first.mass[rule])


def test_padded_target_slots_never_poison_masses():
    # Rows with fewer targets than their bucket's width are padded with flat key 0 (batch 0's
    # first key). Make that key's score with batch 1's queries overflow exp(): the masses must
    # still be finite and equal the dense reference.
    torch.manual_seed(0)
    b, h, n, d = 2, 2, 12, 8
    q = torch.randn(b, h, n, d) * 0.1
    k = torch.randn(b, h, n, d) * 0.1
    q[1] = 30.0
    k[0, :, 0] = 30.0
    tokens = torch.tensor([[1, 2, 3, 1, 2, 3, 1, 2, 3, 1, 2, 3], [4, 5, 4, 5, 4, 6, 7, 4, 8, 9, 4, 5]])
    stats = attention_stats(q, k, scaling=d**-0.5, rules=["dup"], tokens=tokens, row_stats=False, backend="torch")
    assert torch.isfinite(stats.mass["dup"]).all()
    probs, _ = dense_probs(q, k, scaling=d**-0.5)
    for bi in range(b):
        for i in range(n):
            tm = target_mask("dup", tokens, bi, i, n)
            torch.testing.assert_close(stats.mass["dup"][bi, :, i].double(), probs[bi, :, i][:, tm].sum(-1), atol=1e-5, rtol=0)
