"""The Triton path's launch code: every block configuration of the autotune table computes the
same statistics as the PyTorch path (under the interpreter on the CPU), launches go through
``prepare_launches``/``kernel_constexprs``, and target counts are computed once per plan."""

from __future__ import annotations

import importlib.util
import os

import pytest
import torch

from interp.errors import BadInputError
from interp.kernels import RULES, attention_stats
from interp.kernels.attention_stats import check_problem

TRITON = importlib.util.find_spec("triton") is not None and (
    os.environ.get("TRITON_INTERPRET") == "1" or torch.cuda.is_available()
)
pytestmark = pytest.mark.skipif(not TRITON, reason="needs triton (TRITON_INTERPRET=1 on CPU)")

if TRITON:
    from interp.kernels import triton_stats as T


def inputs(dtype, d, group, *, b=2, hkv=1, pos=37, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = (torch.randn(b, hkv * group, pos, d, generator=g) * 0.5).to(dtype)
    k = (torch.randn(b, hkv, pos, d, generator=g) * 0.5).to(dtype)
    base = torch.randint(0, 4, (b, pos // 2 + 1), generator=g)
    tokens = torch.cat([base, base], dim=1)[:, :pos]
    key_mask = torch.ones(b, pos, dtype=torch.bool)
    key_mask[1, :4] = False
    spans = torch.stack([torch.tensor([[r % 5, r % 5 + 4] for r in range(pos)])] * b)
    return q, k, tokens, key_mask, spans


def all_configs():
    out = []
    for (dp, width), configs in T.AUTOTUNE.items():
        for c in (*configs, T.FEW_ROWS[(dp, width)]):
            dtype = torch.float32 if width == "32" else torch.bfloat16
            if (dp, dtype, c) not in out:
                out.append((dp, dtype, c))
    return out


@pytest.mark.parametrize(("d", "dtype", "config"), all_configs() if TRITON else [],
                         ids=lambda v: getattr(v, "name", str(v)))
def test_every_block_configuration_matches_the_torch_path(d, dtype, config):
    # A group that does not divide the row block, padding, a window, soft-capping, every rule and top-k.
    q, k, tokens, key_mask, spans = inputs(dtype, d, group=3)
    kw = dict(scaling=d**-0.5, rules=list(RULES), tokens=tokens, spans=spans, key_mask=key_mask, sliding_window=11,
              softcap=5.0, topk=3, exclude=["bos"])
    want = attention_stats(q, k, **kw, backend="torch")
    problem = check_problem(q, k, kw["scaling"], kw["rules"], tokens, spans, None, key_mask, 11, 5.0, True, 3)
    got = T.triton_attention_stats(problem, list(RULES), tokens, spans, True, 3, ("bos",), config=config)
    real = key_mask[:, None, :].expand(-1, q.shape[1], -1)  # padding queries see nothing: not compared
    for name in ("lse", "max_prob", "entropy", "topk_prob"):
        a, b = getattr(got, name), getattr(want, name)
        torch.testing.assert_close(a[real], b[real], atol=2e-5, rtol=0, msg=name)
    assert torch.equal(got.argmax[real], want.argmax[real])
    for rule in RULES:
        torch.testing.assert_close(got.mass[rule][real], want.mass[rule][real], atol=2e-5, rtol=0, msg=rule)
        assert torch.equal(got.n_targets[rule], want.n_targets[rule]), rule


@pytest.mark.parametrize("group", [1, 5, 8])
def test_group_sizes_and_decoding_rows(group):
    q, k, tokens, key_mask, spans = inputs(torch.float16, 64, group, hkv=2, pos=29)
    for rows in (None, [28], [0, 27, 13]):
        kw = dict(scaling=0.125, rules=["prev", "dup", "ngram2", "self"], tokens=tokens, rows=rows, topk=2)
        want = attention_stats(q, k, **kw, backend="torch")
        got = attention_stats(q, k, **kw, backend="triton")
        torch.testing.assert_close(got.lse, want.lse, atol=2e-5, rtol=0)
        torch.testing.assert_close(got.topk_prob, want.topk_prob, atol=2e-5, rtol=0)
        for rule in kw["rules"]:
            torch.testing.assert_close(got.mass[rule], want.mass[rule], atol=2e-5, rtol=0)


def test_launch_goes_through_prepare_launches(monkeypatch):
    launched = []
    monkeypatch.setattr(T, "_run", lambda launch: launched.append(launch))
    q, k, tokens, _, _ = inputs(torch.bfloat16, 128, 4, pos=50)
    attention_stats(q, k, scaling=0.1, rules=["ngram1", "prev"], tokens=tokens, backend="triton")
    stats, count = launched
    assert (stats.kernel, count.kernel) == ("stats", "count")
    config = T.configs_for(128, torch.bfloat16, rows=50, group=4)[0]
    want, options = T.kernel_constexprs(dtype=torch.bfloat16, head_dim=128, group=4, rules=["ngram1", "prev"],
                                        row_stats=True, topk=0, exclude=(), causal=True, sliding_window=False,
                                        softcap=False, key_padding=False, config=config, interpreted=T._interpreted())
    assert stats.constexprs == want and stats.options == options
    assert stats.grid == (-(-50 // (config.block_m // 4)), 2)


def test_target_counts_computed_once_per_plan(monkeypatch):
    launched = []
    real_run = T._run

    def run(launch):
        launched.append(launch.kernel)
        real_run(launch)

    monkeypatch.setattr(T, "_run", run)
    q, k, tokens, key_mask, _ = inputs(torch.float32, 16, 2, pos=20)
    plan: dict = {}
    first = attention_stats(q, k, scaling=0.25, rules=["dup", "ngram1"], tokens=tokens, key_mask=key_mask, plan=plan,
                            backend="triton")
    second = attention_stats(q * 2, k, scaling=0.25, rules=["dup", "ngram1"], tokens=tokens, key_mask=key_mask,
                             plan=plan, backend="triton")
    assert launched == ["stats", "count", "stats"]
    fresh = attention_stats(q, k, scaling=0.25, rules=["dup", "ngram1"], tokens=tokens, key_mask=key_mask,
                            backend="torch")
    for rule in ("dup", "ngram1"):
        assert torch.equal(second.n_targets[rule], first.n_targets[rule])
        assert torch.equal(first.n_targets[rule], fresh.n_targets[rule])


def test_unsupported_inputs_are_refused_by_name():
    assert T.triton_supports(torch.bfloat16, 256) and T.triton_supports(torch.float32, 64)
    assert not T.triton_supports(torch.float32, 128) and not T.triton_supports(torch.float64, 64)
    q, k = torch.randn(1, 2, 8, 128), torch.randn(1, 2, 8, 128)
    with pytest.raises(BadInputError, match="float32 with head size 128.*backend='torch'"):
        attention_stats(q, k, scaling=0.1, backend="triton")
