"""The PyTorch path on CUDA: which fused SDPA op yields the rows' log-sum-exp, with which
arguments, checked on the CPU against each op's real schema (the CUDA op is replaced only at its
signature by its CPU equivalent); and 16-bit inputs summed in float32."""

from __future__ import annotations

import pytest
import torch

from interp.kernels import attention_stats
from interp.kernels.attention_stats import _flash_lse, check_problem, choose_backend, fused_lse_call

from .reference import dense_probs, target_mask

FLASH = "_scaled_dot_product_flash_attention"
EFFICIENT = "_scaled_dot_product_efficient_attention"
CPU_FLASH = "_scaled_dot_product_flash_attention_for_cpu"
# The real schemas, read before any test replaces an op.
SCHEMAS = {name: getattr(torch.ops.aten, name).default._schema for name in (FLASH, EFFICIENT, CPU_FLASH)}


def problem(dtype=torch.bfloat16, d=64, b=2, h=6, hkv=2, pos=40, **kw):
    g = torch.Generator().manual_seed(0)
    q = torch.randn(b, h, pos, d, generator=g).to(dtype)
    k = torch.randn(b, hkv, pos, d, generator=g).to(dtype)
    spec = dict(key_mask=None, sliding_window=None, softcap=None, causal=True)
    spec.update(kw)
    return check_problem(q, k, d**-0.5, [], None, None, None, spec["key_mask"], spec["sliding_window"], spec["softcap"],
                     spec["causal"], 0)


def bind(op_name: str, args: tuple, kwargs: dict) -> dict:
    """Bind a call to the real ATen schema of ``op_name`` (names, positional/keyword-only, types)."""
    schema = SCHEMAS[op_name]
    params = list(schema.arguments)
    positional = [a for a in params if not a.kwarg_only]
    if len(args) > len(positional):
        raise TypeError(f"{op_name}: {len(args)} positional arguments, the schema takes {len(positional)}")
    bound = {a.name: v for a, v in zip(positional, args, strict=False)}
    for name, value in kwargs.items():
        if name not in {a.name for a in params} or name in bound:
            raise TypeError(f"{op_name}: unexpected or repeated argument {name!r}")
        bound[name] = value
    for a in params:
        if a.name not in bound:
            if not a.has_default_value():
                raise TypeError(f"{op_name}: missing required argument {a.name!r}")
            continue
        value, kind = bound[a.name], str(a.type)
        optional = kind.startswith("Optional[")
        kind = kind.removeprefix("Optional[").removesuffix("]") if optional else kind
        if value is None:
            assert optional, f"{op_name}: {a.name} may not be None"
        elif kind == "Tensor":
            assert isinstance(value, torch.Tensor), (a.name, type(value))
        elif kind == "float":
            assert isinstance(value, float), (a.name, type(value))
        elif kind == "bool":
            assert isinstance(value, bool), (a.name, type(value))
    return bound


def fake_cuda_ops(monkeypatch, calls: list):
    """Replace the two CUDA ops by their CPU equivalent, keeping each one's signature and return layout."""

    def cpu_equivalent(bound):
        q, k, v = (bound[n].float() for n in ("query", "key", "value"))
        out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
            q, k, v, bound.get("dropout_p", 0.0), bound.get("is_causal", False), scale=bound.get("scale"))
        return out.to(bound["query"].dtype), lse

    def flash(*args, **kwargs):
        bound = bind(FLASH, args, kwargs)
        calls.append((FLASH, bound))
        out, lse = cpu_equivalent(bound)
        z = torch.zeros(())
        return out, lse, z, z, 0, 0, z, z, z

    def efficient(*args, **kwargs):
        bound = bind(EFFICIENT, args, kwargs)
        calls.append((EFFICIENT, bound))
        out, lse = cpu_equivalent(bound)
        rows = lse.shape[-1]
        padded = torch.full((*lse.shape[:-1], -(-rows // 32) * 32), float("nan"))  # rows padded to 32, as on CUDA
        padded[..., :rows] = lse
        z = torch.zeros(())
        return out, padded, z, z

    monkeypatch.setattr(torch.ops.aten, FLASH, flash)
    monkeypatch.setattr(torch.ops.aten, EFFICIENT, efficient)


def exact_lse(p) -> torch.Tensor:
    """float64 log-sum-exp of every row from the inputs as given (16-bit values upcast exactly)."""
    q, k = p.q.double(), p.k.double().repeat_interleave(p.group, dim=1)
    s = (q @ k.transpose(-1, -2)) * p.scaling
    n = s.shape[-1]
    s = s.masked_fill(torch.ones(n, n, dtype=torch.bool).triu(1), float("-inf"))
    return torch.logsumexp(s, -1)


@pytest.mark.parametrize(("dtype", "d", "op"), [
    (torch.bfloat16, 64, FLASH), (torch.float16, 128, FLASH), (torch.bfloat16, 256, FLASH),
    (torch.float32, 64, EFFICIENT), (torch.bfloat16, 12, EFFICIENT), (torch.bfloat16, 512, EFFICIENT),
])
def test_cuda_op_choice_and_arguments(dtype, d, op):
    p = problem(dtype, d)
    name, args, kwargs = fused_lse_call(p, device_type="cuda")
    assert name == op
    bound = bind(name, args, kwargs)
    assert bound["is_causal"] is True and bound.get("dropout_p", 0.0) == 0.0 and bound["scale"] == p.scaling
    q, k, v = bound["query"], bound["key"], bound["value"]
    assert q.dtype == k.dtype == v.dtype == dtype  # the kernel's own precision: no float32 copy on the GPU
    assert q.shape == k.shape == v.shape == (2, 6, 40, d)  # kv heads repeated for their query heads
    assert torch.equal(k[:, 0], p.k[:, 0]) and torch.equal(k[:, 3], p.k[:, 1])
    if op == EFFICIENT:
        assert bound["compute_log_sumexp"] is True and bound["attn_bias"] is None
    else:
        assert bound.get("return_debug_mask", False) is False


def test_cpu_keeps_the_cpu_flash_kernel_in_float32():
    name, args, kwargs = fused_lse_call(problem(torch.bfloat16), device_type="cpu")
    assert name == CPU_FLASH
    bind(name, args, kwargs)
    assert all(t.dtype == torch.float32 for t in args[:3])


@pytest.mark.parametrize("kw", [dict(causal=False), dict(sliding_window=8), dict(softcap=30.0),
                                dict(key_mask=torch.tensor([[False] * 3 + [True] * 37] * 2))])
def test_no_fused_kernel_where_its_mask_differs(kw):
    assert fused_lse_call(problem(**kw), device_type="cuda") is None
    # a window at least as long as the keys, or padding with every key real, is plain causal
    assert fused_lse_call(problem(sliding_window=40), device_type="cuda") is not None
    assert fused_lse_call(problem(key_mask=torch.ones(2, 40, dtype=torch.bool)), device_type="cuda") is not None


@pytest.mark.parametrize(("dtype", "d", "op"), [(torch.bfloat16, 64, FLASH), (torch.float32, 64, EFFICIENT),
                                                 (torch.float16, 24, FLASH)])
def test_cuda_lse_through_the_ops_matches_exact_rows(monkeypatch, dtype, d, op):
    calls: list = []
    fake_cuda_ops(monkeypatch, calls)
    p = problem(dtype, d)
    lse = _flash_lse(p, device_type="cuda")
    assert [c[0] for c in calls] == [op]
    assert lse is not None and lse.dtype == torch.float32 and lse.shape == (2, 6, 40)
    torch.testing.assert_close(lse.double(), exact_lse(p), atol=2e-5, rtol=0)


def test_cuda_lse_of_row_subset(monkeypatch):
    fake_cuda_ops(monkeypatch, [])
    p = problem(torch.bfloat16, 64)
    rows = torch.tensor([39, 0, 17])
    sub = check_problem(p.q, p.k, p.scaling, [], None, None, rows, None, None, None, True, 0)
    torch.testing.assert_close(_flash_lse(sub, device_type="cuda"), exact_lse(p)[:, :, rows].float(), atol=2e-5, rtol=0)


def test_op_missing_or_refusing_falls_back(monkeypatch):
    def refuse(*args, **kwargs):
        raise RuntimeError("No available kernel. Aborting execution.")

    monkeypatch.setattr(torch.ops.aten, FLASH, refuse)
    assert _flash_lse(problem(torch.bfloat16), device_type="cuda") is None


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_16bit_inputs_accumulate_in_float32(dtype):
    # Every statistic of 16-bit q and k agrees with a float64 computation on the same 16-bit
    # values to float32 accuracy; sums in 16 bits would be off by ~1e-2.
    g = torch.Generator().manual_seed(1)
    b, h, hkv, n, d = 1, 4, 2, 48, 64
    q = (3 * torch.randn(b, h, n, d, generator=g)).to(dtype)
    k = torch.randn(b, hkv, n, d, generator=g).to(dtype)
    tokens = torch.randint(0, 5, (b, n), generator=g)
    rules = ["prev", "dup", "ngram1"]
    for row_stats in (False, True):
        s = attention_stats(q, k, scaling=d**-0.5, rules=rules, tokens=tokens, row_stats=row_stats, backend="torch")
        probs, _ = dense_probs(q, k, scaling=d**-0.5)
        for rule in rules:
            for i in range(n):
                tm = target_mask(rule, tokens, 0, i, n)
                torch.testing.assert_close(s.mass[rule][0, :, i].double(), probs[0, :, i][:, tm].sum(-1), atol=2e-6,
                                           rtol=0)
        if row_stats:
            torch.testing.assert_close(s.max_prob[0].double(), probs[0].max(-1).values, atol=2e-6, rtol=0)


def test_backend_choice():
    assert choose_backend("auto", is_cuda=False) == "torch"
    assert choose_backend("auto", is_cuda=True, triton_installed=True) == "triton"
    assert choose_backend("auto", is_cuda=True, triton_installed=False) == "torch"  # fused CUDA lse, no Triton
    assert choose_backend("auto", is_cuda=True, triton_installed=True, dtype=torch.float32, head_dim=128) == "torch"
    assert choose_backend("auto", is_cuda=True, triton_installed=True, dtype=torch.bfloat16, head_dim=128) == "triton"
    assert choose_backend("triton", is_cuda=False) == "triton"
    assert choose_backend("torch", is_cuda=True) == "torch"
