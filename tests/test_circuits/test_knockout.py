"""Attention-edge knockout against a dense float64 reference, and as removal of information."""

from __future__ import annotations

import re

import pytest
import torch
from tiny_models import NullTokenizer, build, padded_batch

from interp import Model
from interp.circuits.knockout import edges_mask, knockout, run_with_knockout

FAMILIES = ["llama", "mistral", "gpt2", "qwen3"]  # GQA, MQA + sliding window, MHA + absolute positions, q/k norms


def tiny(family: str, attn: str = "sdpa") -> Model:
    return Model(build(family, attn=attn), NullTokenizer(), name=f"tiny-{family}")


def dense_z(tr, layer: int, blocked: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """softmax(q·kᵀ) v in float64 with the causal, window, padding and knockout masks (and the
    layer's soft-capping): [b, pos, H, d]."""
    q = tr[f"blocks.{layer}.attn.hook_q"].double()
    k = tr[f"blocks.{layer}.attn.hook_k"].double()
    v = tr[f"blocks.{layer}.attn.hook_v"].double()
    spec = tr.specs[layer]
    group = spec.group
    k, v = k.repeat_interleave(group, dim=2), v.repeat_interleave(group, dim=2)
    scores = torch.einsum("bqhd,bkhd->bhqk", q, k) * spec.scaling
    if spec.softcap is not None:
        scores = torch.tanh(scores / spec.softcap) * spec.softcap
    n = q.shape[1]
    i, j = torch.arange(n)[:, None], torch.arange(n)[None, :]
    ok = j <= i
    if spec.sliding_window is not None:
        ok &= i - j < spec.sliding_window
    ok = ok[None] & mask.bool()[:, None, :] & ~blocked
    scores = scores.masked_fill(~ok[:, None], float("-inf"))
    probs = torch.nan_to_num(torch.softmax(scores, dim=-1))
    return torch.einsum("bhqk,bkhd->bqhd", probs, v)


@pytest.mark.parametrize("family", FAMILIES)
def test_knockout_matches_dense_reference(family):
    model = tiny(family)
    batch = padded_batch(seed=1, lengths=(20, 14))
    n = batch["input_ids"].shape[1]
    g = torch.Generator().manual_seed(0)
    blocked = torch.rand(2, n, n, generator=g) < 0.3
    blocked &= ~torch.eye(n, dtype=torch.bool)  # every row keeps its own key
    sites = ["blocks.1.attn.hook_q", "blocks.1.attn.hook_k", "blocks.1.attn.hook_v", "blocks.1.attn.hook_z",
             "blocks.0.attn.hook_z"]
    with knockout(model, blocked, layers=[1]), model.trace(batch, sites=sites) as tr:
        pass
    real = batch["attention_mask"].bool()
    got, want = tr["blocks.1.attn.hook_z"], dense_z(tr, 1, blocked, batch["attention_mask"])
    assert (got.double() - want).abs()[real].max() < 1e-5
    with model.trace(batch, sites=["blocks.0.attn.hook_z", "blocks.1.attn.hook_z"]) as clean:
        pass
    # Layer 0 is untouched; layer 1 really changed.
    assert torch.equal(tr["blocks.0.attn.hook_z"], clean["blocks.0.attn.hook_z"])
    assert (clean["blocks.1.attn.hook_z"] - got).abs()[real].max() > 1e-3


@pytest.mark.parametrize("family", FAMILIES)
def test_knockout_of_all_edges_into_a_position_removes_its_information(family):
    model = tiny(family)
    ids = torch.randint(1, 128, (1, 16), generator=torch.Generator().manual_seed(2))
    p = 6
    blocked = torch.zeros(1, 16, 16, dtype=torch.bool)
    blocked[0, p + 1 :, p] = True  # no later query reads position p, in any layer
    other = ids.clone()
    other[0, p] = (ids[0, p] + 17) % 127 + 1
    a = run_with_knockout(model, ids, blocked)
    b = run_with_knockout(model, other, blocked)
    keep = [i for i in range(16) if i != p]
    assert torch.allclose(a[0, keep], b[0, keep], atol=1e-5)
    # Without the knockout the token at p does matter downstream.
    assert (model.run(ids)[0, p + 1 :] - model.run(other)[0, p + 1 :]).abs().max() > 1e-3


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_knockout_on_a_sliding_window_layer_matches_dense_reference(attn):
    """Tiny Gemma 3: layers 0 and 1 read a window of 6 keys, layer 2 every key; MQA, q/k norms and
    soft-capping. A knockout on a sliding layer keeps its window (the reference applies it)."""
    model = tiny("gemma3", attn)
    assert [model.sliding_window(la) for la in range(3)] == [6, 6, None]
    batch = padded_batch(seed=1, lengths=(20, 14))
    n = batch["input_ids"].shape[1]
    g = torch.Generator().manual_seed(0)
    blocked = torch.rand(2, n, n, generator=g) < 0.3
    blocked &= ~torch.eye(n, dtype=torch.bool)  # every row keeps its own key
    sites = [f"blocks.{la}.attn.hook_{x}" for la in (1, 2) for x in "qkvz"]
    with knockout(model, blocked, layers=[1, 2]), model.trace(batch, sites=sites) as tr:
        pass
    with model.trace(batch, sites=["blocks.1.attn.hook_z", "blocks.2.attn.hook_z"]) as clean:
        pass
    real = batch["attention_mask"].bool()
    for layer in (1, 2):
        assert tr.specs[layer].sliding_window == model.sliding_window(layer)
        got, want = tr[f"blocks.{layer}.attn.hook_z"], dense_z(tr, layer, blocked, batch["attention_mask"])
        assert (got.double() - want).abs()[real].max() < 1e-5, f"layer {layer}"
        assert (clean[f"blocks.{layer}.attn.hook_z"] - got).abs()[real].max() > 1e-3, f"layer {layer}"


def test_knockout_checks_each_layers_window_before_any_forward():
    """Blocking every key of a query's window empties its row on a sliding layer only: checked
    against that layer's window before the forward, and fine on the full-attention layer."""
    from interp.errors import BadInputError

    model = tiny("gemma3")
    ids = torch.randint(1, 128, (1, 16), generator=torch.Generator().manual_seed(6))
    blocked = edges_mask([[(10, j) for j in range(5, 11)]], n=16)  # keys 5..10: query 10's whole window of 6
    forwards = []
    handle = model.hf.register_forward_pre_hook(lambda *a: forwards.append(1))
    try:
        with pytest.raises(BadInputError, match="knockout leaves query 10 of item 0 with no key to attend to"):
            run_with_knockout(model, ids, blocked, layers=[0])
        assert forwards == []
        out = run_with_knockout(model, ids, blocked, layers=[2])  # every earlier key: 0..4 stay visible
    finally:
        handle.remove()
    assert forwards == [1] and not torch.allclose(out, model.run(ids), atol=1e-4)


def test_knockout_eager_equals_sdpa():
    sdpa, eager = tiny("llama"), tiny("llama", attn="eager")
    ids = torch.randint(1, 128, (2, 12), generator=torch.Generator().manual_seed(3))
    blocked = edges_mask([[(11, 3), (11, 4), (7, 0)], [(5, 1)]], n=12)
    a = run_with_knockout(sdpa, ids, blocked, layers=[0, 2])
    b = run_with_knockout(eager, ids, blocked, layers=[0, 2])
    assert torch.allclose(a, b, atol=1e-5)


def test_knockout_per_head_and_hooks_removed():
    model = tiny("llama")
    ids = torch.randint(1, 128, (1, 10), generator=torch.Generator().manual_seed(4))
    blocked = edges_mask([[(9, j) for j in range(9)]], n=10)  # the last query reads only itself
    with knockout(model, blocked, layers=[0], heads=[1]), model.trace(ids, sites="blocks.0.attn.hook_z") as tr:
        pass
    with model.trace(ids, sites="blocks.0.attn.hook_z") as clean:
        pass
    z, z0 = tr["blocks.0.attn.hook_z"], clean["blocks.0.attn.hook_z"]
    assert torch.equal(z[0, :, 0], z0[0, :, 0]) and not torch.allclose(z[0, -1, 1], z0[0, -1, 1])
    # A row that reads only itself takes its own value: v of its kv head (head 1 -> kv 0 in GQA 4:2).
    with model.trace(ids, sites="blocks.0.attn.hook_v") as tv:
        pass
    assert torch.allclose(z[0, -1, 1], tv["blocks.0.attn.hook_v"][0, -1, 0], atol=1e-6)
    assert all(not m._forward_pre_hooks for m in model.hf.modules())


def test_knockout_errors():
    model = tiny("llama")
    ids = torch.randint(1, 128, (1, 8))
    with pytest.raises(ValueError, match="no key to attend"):
        run_with_knockout(model, ids, edges_mask([[(3, j) for j in range(4)]], n=8))
    with pytest.raises(ValueError, match="mask is for 1 item of 9 tokens, but the inputs are 1 item of 8 tokens"):
        run_with_knockout(model, ids, edges_mask([[(3, 1)]], n=9))
    with pytest.raises(IndexError, match="outside"):
        edges_mask([[(9, 1)]], n=8)
    with pytest.raises(IndexError, match="layer 7"):
        run_with_knockout(model, ids, edges_mask([[(3, 1)]], n=8), layers=[7])
    assert all(not m._forward_pre_hooks for m in model.hf.modules())


def test_knockout_must_be_opened_before_a_trace_with_inputs():
    from interp.errors import UsageError

    model = tiny("llama")
    ids = torch.randint(1, 128, (1, 10), generator=torch.Generator().manual_seed(5))
    blocked = edges_mask([[(9, j) for j in range(9)]], n=10)
    plain = model.run(ids)
    # The right order: the knockout is in place when the trace's forward runs.
    with knockout(model, blocked), model.trace(ids) as tr:
        pass
    assert not torch.allclose(tr.logits[0, -1], plain[0, -1], atol=1e-4)
    torch.testing.assert_close(tr.logits, run_with_knockout(model, ids, blocked))
    # The wrong order: the forward already ran on entry, so the knockout would change nothing.
    message = ("knockout(...) was opened inside `with model.trace(inputs)`, whose forward pass already ran when the "
               "trace was entered, so the knockout would change nothing; open the knockout first, then the trace: "
               "`with knockout(model, blocked, layers=...), model.trace(inputs, sites=...) as tr:`")
    with model.trace(ids) as tr2, pytest.raises(UsageError, match=re.escape(message)):
        with knockout(model, blocked):
            pass
    assert all(not m._forward_pre_hooks for m in model.hf.modules())
    # A trace without inputs runs nothing on entry: a knockout opened inside it acts on what runs after.
    with model.trace(sites="blocks.0.attn.hook_z") as tr3:
        with knockout(model, blocked):
            logits = model.hf(input_ids=ids).logits
    torch.testing.assert_close(logits, tr.logits)
    # run_with_knockout runs its own forward, so it is fine inside any trace.
    with model.trace(ids):
        torch.testing.assert_close(run_with_knockout(model, ids, blocked), tr.logits)
    assert "blocks.0.attn.hook_z" in tr3 and tr2.logits is not None


def test_knockout_input_errors():
    from interp.errors import BadInputError, OutOfRangeError

    model = tiny("llama")
    ids = torch.randint(1, 128, (1, 8))
    with pytest.raises(BadInputError, match=r"^blocked must be a bool \[batch, pos, pos\] tensor \(see edges_mask\), "
                                            r"got torch.float32 \(1, 8, 8\)$"):
        run_with_knockout(model, ids, torch.zeros(1, 8, 8))
    with pytest.raises(OutOfRangeError, match=r"^position 9 is out of range: valid positions are 0..7; edge \(9, 1\) "
                                              r"of item 0 is outside a sequence of 8 tokens"):
        edges_mask([[(9, 1)]], n=8)
    with pytest.raises(OutOfRangeError, match=r"^head 4 is out of range: valid heads are 0..3$"):
        with knockout(model, edges_mask([[(3, 1)]], n=8), heads=[4]):
            pass
    with pytest.raises(BadInputError, match=r"^knockout leaves query 3 of item 0 with no key to attend to"):
        run_with_knockout(model, ids, edges_mask([[(3, j) for j in range(4)]], n=8))
