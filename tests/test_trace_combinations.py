"""Every combination of mask edits, observers, captures and interventions is exact or refuses.

Mask edits (``circuits.knockout``, ``heads.compressed``) compose in any order and nest: each
layer's attention output ``hook_z`` and pattern must equal attention computed in float64 from the
captured q, k and v with an explicit visibility (the model's causal, window and padding mask,
and a key only where every edit keeps it). Nested traces, several forwards in one trace,
positions outside the prompt and caches of weight-derived tables either give exact results or
raise a clear error.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from tiny_models import VOCAB, NullTokenizer, build, padded_batch

import interp
from interp import Model
from interp.circuits.knockout import knockout
from interp.core import interventions as iv
from interp.errors import BadInputError, OutOfRangeError, UsageError
from interp.heads.compression import compressed, sliding_windows

pytestmark = pytest.mark.usefixtures("one_thread")


def _tiny(family: str, attn: str = "sdpa") -> Model:
    return Model(build(family, attn=attn), NullTokenizer(), name=f"tiny-{family}")


# -- the dense float64 reference ------------------------------------------------------------------


def _own(spec, attention_mask: torch.Tensor, n: int) -> torch.Tensor:
    """The model's own mask: causal, the layer's window, key padding; bool [b, 1, n, n]."""
    i, j = torch.arange(n)[:, None], torch.arange(n)[None, :]
    ok = j <= i
    if spec.sliding_window is not None:
        ok = ok & (i - j < spec.sliding_window)
    return (ok[None] & attention_mask.bool()[:, None, :])[:, None]


def _streaming(model: Model, layer: int, comp: dict, first: list[int], n: int) -> torch.Tensor | None:
    """What a compressed cache lets each head read on ``layer`` (bool [b, H, n, n]), None if nothing."""
    if layer in sliding_windows(model) or comp["keep"][layer].all():
        return None
    group = model.cfg.n_heads // model.cfg.n_kv_heads
    stream = torch.as_tensor(np.repeat(~comp["keep"][layer], group))  # [H]
    i, j = torch.arange(n)[:, None], torch.arange(n)[None, :]
    rows = []
    for f in first:
        kept = ((j >= f) & (j < f + comp["sink"])) | ((i - j < comp["window"]) & (j <= i))
        rows.append(torch.where(stream[:, None, None], kept[None], torch.ones(1, n, n, dtype=torch.bool)))
    return torch.stack(rows)


def _visible(model: Model, tr, layer: int, batch: dict, blocked=None, ko_layers=(), ko_heads=None,
             comps=()) -> torch.Tensor:
    """Keys each query of each head may read under every edit: bool [b, H, n, n]."""
    n = batch["input_ids"].shape[1]
    first = (1 - batch["attention_mask"]).sum(1).tolist()
    vis = _own(tr.specs[layer], batch["attention_mask"], n).expand(-1, model.cfg.n_heads, -1, -1).clone()
    if blocked is not None and layer in ko_layers:
        heads = torch.zeros(model.cfg.n_heads, dtype=torch.bool)
        heads[list(range(model.cfg.n_heads)) if ko_heads is None else ko_heads] = True
        vis &= ~(blocked[:, None] & heads[None, :, None, None])
    for comp in comps:
        s = _streaming(model, layer, comp, first, n)
        if s is not None:
            vis &= s
    return vis


def _dense(tr, layer: int, vis: torch.Tensor, step: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention probabilities [b, H, q, k] and output z [b, q, H, d] in float64 from the captured q, k, v."""
    q, k, v = (tr.steps(f"blocks.{layer}.attn.hook_{x}")[step].double() for x in "qkv")
    spec = tr.specs[layer]
    k, v = k.repeat_interleave(spec.group, dim=2), v.repeat_interleave(spec.group, dim=2)
    scores = torch.einsum("bqhd,bkhd->bhqk", q, k) * spec.scaling
    if spec.softcap is not None:
        scores = torch.tanh(scores / spec.softcap) * spec.softcap
    probs = torch.nan_to_num(torch.softmax(scores.masked_fill(~vis, float("-inf")), dim=-1))
    return probs, torch.einsum("bhqk,bkhd->bqhd", probs, v)


SITES = [f"blocks.*.attn.hook_{x}" for x in "qkvz"]
SINK, WINDOW = 2, 5


def _keep(model: Model, odd: bool) -> np.ndarray:
    keep = np.zeros((model.cfg.n_layers, model.cfg.n_kv_heads), dtype=bool)
    keep[:, (1 if odd else 0)::2] = True
    if model.cfg.n_kv_heads == 1:
        keep[:] = False  # MQA: the one kv head streams in both caches
    return keep


def _setup(model: Model):
    batch = padded_batch(seed=1, lengths=(24, 17))
    n = batch["input_ids"].shape[1]
    blocked = (torch.rand(2, n, n, generator=torch.Generator().manual_seed(0)) < 0.3) & ~torch.eye(n, dtype=torch.bool)
    c1 = {"keep": _keep(model, True), "sink": SINK, "window": WINDOW}
    c2 = {"keep": _keep(model, False), "sink": 3, "window": 4}
    return batch, blocked, c1, c2


def _check_exact(model: Model, tr, batch: dict, **edits) -> None:
    """hook_z and attention_pattern of every layer against the float64 reference, at real queries."""
    real = batch["attention_mask"].bool()
    for layer in range(model.cfg.n_layers):
        vis = _visible(model, tr, layer, batch, **edits)
        probs, z = _dense(tr, layer, vis)
        got = tr[f"blocks.{layer}.attn.hook_z"].double()
        assert (got - z).abs()[real].max() < 2e-5, f"layer {layer}: hook_z is not the reference"
        pattern = interp.attention_pattern(tr, layer, dtype=torch.float64)
        assert (pattern - probs).abs().permute(0, 2, 1, 3)[real].max() < 1e-9, f"layer {layer}: pattern"


FAMILIES = [("llama", "sdpa"), ("llama", "eager"), ("qwen3", "sdpa"), ("gemma3", "sdpa"), ("gpt2", "sdpa")]


@pytest.mark.parametrize("heads", [None, [1, 2]])
@pytest.mark.parametrize(("family", "attn"), FAMILIES)
def test_knockout_and_compressed_compose_in_either_order_exactly(family, attn, heads):
    """GQA (llama, qwen3), MQA with sliding layers and soft-capping (gemma3), MHA with absolute
    positions (gpt2), eager attention's additive masks; a left-padded batch; the knockout on every
    head or on some. The tester's case (knockout opened outside compressed) was off by 14.4 in the
    logits."""
    model = _tiny(family, attn)
    batch, blocked, c1, _ = _setup(model)
    ko = {"layers": [0, 2], "heads": heads}
    edits = {"blocked": blocked, "ko_layers": ko["layers"], "ko_heads": ko["heads"], "comps": [c1]}
    with knockout(model, blocked, **ko), compressed(model, c1["keep"], sink=SINK, window=WINDOW), \
            model.trace(batch, sites=SITES) as outside:
        pass
    _check_exact(model, outside, batch, **edits)
    with compressed(model, c1["keep"], sink=SINK, window=WINDOW), knockout(model, blocked, **ko), \
            model.trace(batch, sites=SITES) as inside:
        pass
    _check_exact(model, inside, batch, **edits)
    assert torch.equal(outside.logits, inside.logits)
    # both edits matter: either alone gives other logits
    real = batch["attention_mask"].bool()
    with knockout(model, blocked, **ko), model.trace(batch) as ko_only:
        pass
    with compressed(model, c1["keep"], sink=SINK, window=WINDOW), model.trace(batch) as comp_only:
        pass
    for alone in (ko_only, comp_only):
        assert (alone.logits - inside.logits).abs()[real].max() > 1e-3


@pytest.mark.parametrize(("family", "attn"), FAMILIES)
def test_compressed_nested_in_compressed_keeps_what_both_keep(family, attn):
    """Two caches at once (other streaming heads, sinks and windows): a key is visible only where
    both keep it; with a knockout too, where all three do."""
    model = _tiny(family, attn)
    batch, blocked, c1, c2 = _setup(model)
    with compressed(model, c1["keep"], sink=SINK, window=WINDOW), \
            compressed(model, c2["keep"], sink=c2["sink"], window=c2["window"]), \
            model.trace(batch, sites=SITES) as tr:
        pass
    _check_exact(model, tr, batch, comps=[c1, c2])
    with compressed(model, c2["keep"], sink=c2["sink"], window=c2["window"]), knockout(model, blocked), \
            compressed(model, c1["keep"], sink=SINK, window=WINDOW), model.trace(batch, sites=SITES) as three:
        pass
    _check_exact(model, three, batch, blocked=blocked, ko_layers=range(3), comps=[c1, c2])


def test_edits_that_together_leave_a_query_no_key_raise():
    """Each edit alone keeps a key per row; together they would leave none (SDPA would return NaN)."""
    model = _tiny("llama")
    ids = torch.randint(1, VOCAB, (1, 12), generator=torch.Generator().manual_seed(2))
    keep = np.zeros((3, 2), dtype=bool)
    blocked = torch.zeros(1, 12, 12, dtype=torch.bool)
    blocked[0, 5, 5] = True  # query 5 may read keys 0..4, not itself
    with compressed(model, keep, sink=0, window=1):  # streaming heads read only themselves
        model.run(ids)
    with knockout(model, blocked), model.trace(ids):
        pass
    message = ("the 2 attention-mask edits open on layer 0 (knockouts, compressed caches) together leave query 5 of "
               "item 0 (head 0) with no key to attend to")
    with pytest.raises(BadInputError, match=re.escape(message)):
        with compressed(model, keep, sink=0, window=1), knockout(model, blocked):
            model.run(ids)


def test_an_edit_that_widens_the_mask_runs_alone_and_refuses_company():
    """A custom edit that makes later keys visible (bidirectional attention) is exact alone; with
    another edit open, the intersection would silently drop its widening: it raises instead."""
    model = _tiny("llama")
    ids = torch.randint(1, VOCAB, (1, 10), generator=torch.Generator().manual_seed(3))

    def bidirectional(module, mask, q, k):
        return torch.ones(q.shape[0], 1, q.shape[2], k.shape[2], dtype=torch.bool)

    with model.trace(ids, mask_edits={0: bidirectional}) as wide:
        pass
    assert not torch.allclose(wide.logits, model.run(ids), atol=1e-4)
    blocked = torch.zeros(1, 10, 10, dtype=torch.bool)
    blocked[0, 9, 3] = True
    with pytest.raises(UsageError, match=r"layer 0's attention has 2 mask edits open and one of them makes visible "
                                         r"keys that the model's own mask hides"):
        with knockout(model, blocked), model.trace(ids, mask_edits={0: bidirectional}):
            pass


def test_observers_under_an_edit_raise_and_stop_after_does_not():
    model = _tiny("llama")
    ids = torch.randint(1, VOCAB, (1, 10), generator=torch.Generator().manual_seed(4))
    blocked = torch.zeros(1, 10, 10, dtype=torch.bool)
    blocked[0, 9, :9] = True
    with pytest.raises(UsageError, match=r"layer 1's attention mask is edited \(a knockout or a compressed cache\) "
                                         r"while attention statistics are observed there"):
        with knockout(model, blocked, layers=[1]), model.trace(ids, observe=lambda *a: None, observe_layers=[1]):
            pass
    # an early stop reads nothing, so it runs under a knockout, and what ran is the knocked-out run
    site = "blocks.1.attn.hook_q"  # after layer 0's knocked-out attention
    with knockout(model, blocked, layers=[0, 1]), model.trace(ids, sites=site, stop_after=1) as early:
        pass
    with knockout(model, blocked, layers=[0, 1]), model.trace(ids, sites=site) as full:
        pass
    assert early.logits is None and torch.equal(early[site], full[site])
    with model.trace(ids, sites=site) as plain:
        pass
    assert not torch.allclose(plain[site][0, -1], full[site][0, -1], atol=1e-4)


def test_attention_pattern_of_compressed_decoding_steps_is_exact():
    """Under generate with a KV cache, each step's pattern uses the step's own mask: the streaming
    heads of the new token read only the sinks and the recent window."""
    model = _tiny("llama")
    keep = np.array([[True, False]] * 3)
    prompt = torch.randint(1, VOCAB, (1, 20), generator=torch.Generator().manual_seed(5))
    with compressed(model, keep, sink=SINK, window=WINDOW), model.trace(sites="blocks.2.attn.hook_[qk]") as tr:
        model.generate(prompt, max_new_tokens=3)
    assert len(tr.steps("blocks.2.attn.hook_q")) == 3
    for step in range(3):
        q, k = tr.steps("blocks.2.attn.hook_q")[step], tr.steps("blocks.2.attn.hook_k")[step]
        n_q, n_k = q.shape[1], k.shape[1]
        i = torch.arange(n_k - n_q, n_k)[:, None]
        j = torch.arange(n_k)[None, :]
        causal = j <= i
        stream = causal & ((j < SINK) | (i - j < WINDOW))
        vis = torch.stack([stream if h >= 2 else causal for h in range(4)])[None]  # heads 2, 3 read kv head 1
        spec = tr.specs[2]
        kk = k.double().repeat_interleave(spec.group, dim=2)
        scores = torch.einsum("bqhd,bkhd->bhqk", q.double(), kk) * spec.scaling
        want = torch.softmax(scores.masked_fill(~vis, float("-inf")), -1)
        got = interp.attention_pattern(tr, 2, step=step, dtype=torch.float64)
        torch.testing.assert_close(got, want, atol=1e-9, rtol=0)
    with pytest.raises(OutOfRangeError, match=r"^step 3 is out of range: valid steps are 0..2; attention_pattern"):
        interp.attention_pattern(tr, 2, step=3)


def test_attention_pattern_picks_each_generate_steps_own_padding():
    """Two generate calls in one trace, a padded batch then a single prompt: each step's pattern
    uses that step's padding, not the last call's."""
    model = _tiny("qwen3")
    batch = padded_batch(seed=6, lengths=(9, 6))
    single = torch.randint(1, VOCAB, (1, 7), generator=torch.Generator().manual_seed(7))
    with model.trace(sites="blocks.1.attn.hook_[qk]") as tr:
        model.generate(batch, max_new_tokens=2)
        model.generate(single, max_new_tokens=2)
    with model.trace(batch, sites="blocks.1.attn.hook_[qk]") as alone:
        pass
    first = interp.attention_pattern(tr, 1, step=0, dtype=torch.float64)
    torch.testing.assert_close(first, interp.attention_pattern(alone, 1, dtype=torch.float64), atol=1e-6, rtol=0)
    assert torch.all(first[1, :, :, :3] == 0)  # the padded row never reads its padding
    last = interp.attention_pattern(tr, 1, dtype=torch.float64)  # the default: the last forward
    assert last.shape == (1, model.cfg.n_heads, 1, 8) and torch.all(last > 0)


# -- nested traces and several forwards -----------------------------------------------------------


def _ids(seed: int, n: int = 10, batch: int = 1) -> torch.Tensor:
    return torch.randint(1, VOCAB, (batch, n), generator=torch.Generator().manual_seed(seed))


RUN_IN_RUN = "model.trace(inputs) (or model.run / run_with_cache) was opened inside another `with model.trace(inputs"


def test_a_run_inside_a_run_with_hooks_is_refused_and_the_outer_trace_keeps_its_own():
    model = _tiny("llama")
    x, y = _ids(1), _ids(2)
    site = "blocks.1.hook_resid_post"
    with model.trace(x, sites=site) as alone:
        pass
    for inner in (lambda: model.trace(y, sites=site).__enter__(), lambda: model.run(y),
                  lambda: model.run_with_cache(y, site)):
        with model.trace(x, sites=site, interventions={"blocks.0.hook_resid_post": iv.zero()}) as outer:
            with pytest.raises(UsageError, match=re.escape(RUN_IN_RUN)):
                inner()
        assert len(outer.steps(site)) == 1
    with model.trace(x, sites=site) as outer:
        pass
    torch.testing.assert_close(outer[site], alone[site])
    # an outer run with no hooks of its own (only its forward) lets a run open inside it
    with model.trace(x) as plain, model.trace(y, sites=site) as inner_run:
        pass
    assert plain.logits is not None and len(inner_run.steps(site)) == 1


def test_a_scope_captures_and_intervenes_on_the_runs_inside_it():
    """A trace without inputs acts on everything run in its block, traces with inputs included,
    as generate inside it; the inner trace keeps its own captures."""
    model = _tiny("gpt2")
    x = _ids(3)
    fix = {"blocks.0.hook_resid_post": iv.scale(0.5)}
    with model.trace(x, sites=["blocks.1.hook_resid_post", "blocks.2.hook_mlp_out"], interventions=fix) as want:
        pass
    with model.trace(sites="blocks.1.hook_resid_post", interventions=fix) as scope:
        with model.trace(x, sites="blocks.2.hook_mlp_out") as run:
            pass
        logits = model.run(x)
    assert "blocks.1.hook_resid_post" not in run and "blocks.2.hook_mlp_out" not in scope
    torch.testing.assert_close(run["blocks.2.hook_mlp_out"], want["blocks.2.hook_mlp_out"], atol=0, rtol=0)
    steps = scope.steps("blocks.1.hook_resid_post")
    assert len(steps) == 2  # the inner trace's forward and model.run's
    for s in steps:
        torch.testing.assert_close(s, want["blocks.1.hook_resid_post"], atol=0, rtol=0)
    torch.testing.assert_close(logits, want.logits, atol=0, rtol=0)


def test_several_forwards_in_one_trace_keep_all_and_refuse_to_pick_one():
    model = _tiny("llama")
    x, y = _ids(4), _ids(5, n=7)
    site = "blocks.0.hook_resid_post"
    with model.trace(x, sites=site) as tx:
        pass
    with model.trace(y, sites=site) as ty:
        pass
    with model.trace(x, sites=site) as tr:
        model.hf(input_ids=y)
    message = (f"site {site!r} was captured in 2 forward passes of this trace (its own and the model.hf / "
               "model.generate steps / inner traces run in its block), so trace[site] would have to pick one; use "
               f"trace.steps({site!r})[i]")
    with pytest.raises(UsageError, match=re.escape(message)):
        tr[site]
    first, second = tr.steps(site)
    assert torch.equal(first, tx[site]) and torch.equal(second, ty[site])
    # generate inside a trace with inputs: its own forward, then the prompt and one step per new token
    with model.trace(x, sites=site) as tg:
        model.generate(y, max_new_tokens=3)
    assert [s.shape[1] for s in tg.steps(site)] == [10, 7, 1, 1]
    with pytest.raises(UsageError, match="captured in 4 forward passes"):
        tg["resid_post", 0]
    # a patch from such a trace refuses too, rather than patch from its last forward
    with pytest.raises(UsageError, match="captured in 2 forward passes"):
        model.run(x, interventions={site: iv.patch(tr)})


# -- positions outside the prompt ----------------------------------------------------------------


def test_positions_outside_the_prompt_raise_for_captures_and_interventions():
    model = _tiny("llama")
    ids = _ids(6)
    site = "blocks.0.hook_resid_post"
    capture = ("positions slice(100, 200) is out of range: valid positions are 0..9; trace(positions=...) keeps no "
               "position of the input of 10 tokens")
    for positions in (slice(100, 200), slice(-100, -50)):
        text = capture.replace("slice(100, 200)", f"slice({positions.start}, {positions.stop})")
        with pytest.raises(OutOfRangeError, match=re.escape(text)):
            with model.trace(ids, sites=site, positions=positions):
                pass
    with pytest.raises(OutOfRangeError, match=r"^position 100 is out of range: valid positions are 0..9"):
        with model.trace(ids, sites=site, positions=[100]):
            pass
    add = ("positions slice(100, 200) is out of range: valid positions are 0..9; add at blocks.0.hook_resid_post: "
           "positions= keeps no position of the input of 10 tokens")
    far = {site: iv.add(1.0, positions=slice(100, 200))}
    with pytest.raises(OutOfRangeError, match=re.escape(add)):
        with model.trace(ids, interventions=far):
            pass
    with pytest.raises(OutOfRangeError, match=re.escape(add)):
        model.run(ids, interventions=far)
    with pytest.raises(OutOfRangeError, match=re.escape(add)):
        model.generate(ids, max_new_tokens=2, interventions=far)
    with pytest.raises(OutOfRangeError, match=r"^position 100 is out of range: valid positions are 0..9"):
        model.run(ids, interventions={site: iv.add(1.0, positions=[100])})
    # a slice that overlaps the prompt keeps the overlap, as Python's slicing does
    with model.trace(ids, sites=site, positions=slice(5, 100)) as tr:
        pass
    assert tr[site].shape[1] == 5


def test_positions_a_scope_never_reached_raise_when_the_block_ends():
    """Without inputs the lengths are known only as forwards run: a slice that kept no position in
    any of them raises at the end of the block, naming the lengths seen."""
    model = _tiny("llama")
    ids = _ids(7)
    site = "blocks.0.hook_resid_post"
    with pytest.raises(OutOfRangeError, match=re.escape(
            "positions slice(100, 200) is out of range: valid positions are 0..9; trace(positions=...) at "
            "blocks.0.hook_resid_post: kept no position in any of the 1 forward pass(es) of this block, which passed "
            "10 position(s)")):
        with model.trace(sites=site, positions=slice(100, 200)):
            model.hf(input_ids=ids)
    with pytest.raises(OutOfRangeError, match=re.escape(
            "add at blocks.0.hook_resid_post: positions= kept no position in any of the 2 forward pass(es) of this "
            "block, which passed 10, 7 position(s)")):
        with model.trace(interventions={site: iv.add(1.0, positions=slice(100, 200))}):
            model.hf(input_ids=ids)
            model.hf(input_ids=ids[:, :7])
    # under generate a slice that reaches the prompt is fine, though the later steps pass one token
    with model.trace(sites=site, positions=slice(3, None)) as tr:
        model.generate(ids, max_new_tokens=3)
    assert [s.shape[1] for s in tr.steps(site)] == [7, 0, 0]


# -- caches notice in-place weight changes --------------------------------------------------------


def test_weights_fingerprint_sees_a_swap_that_keeps_every_sum():
    from interp.models.fingerprint import bits_hash, weights_fingerprint

    model = _tiny("llama")
    before = weights_fingerprint(model)
    w = model.weight(model.adapter.unembed)
    w.data[[3, 5]] = w.data[[5, 3]].clone()  # two rows swapped: sums, norms and version unchanged
    assert weights_fingerprint(model) != before
    x = torch.randn(1000)
    y = x.clone()
    y[[1, 2]] = y[[2, 1]]
    assert bits_hash(x) != bits_hash(y) and bits_hash(x) == bits_hash(x.clone())  # the accelerators' hash


def test_a_kept_prefill_of_other_weights_is_not_used(monkeypatch):
    from interp.heads import retrieval

    model = _tiny("llama")
    test = retrieval.NeedleTest(prompt_ids=_ids(8, n=12), span=(3, 5), answer="x", length=12, depth=0.5, needle=0)
    made: list[int] = []
    real = retrieval.prefill

    def counting(*args, **kwargs):
        made.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(retrieval, "prefill", counting)
    retrieval.keep_prefill(model, [test], real(model, [test.prompt_ids]))
    retrieval.take_prefill(model, [test])
    assert made == []  # the kept one, weights unchanged
    retrieval.keep_prefill(model, [test], real(model, [test.prompt_ids]))
    model.weight(model.in_block(0, model.adapter.o_proj)).data[7] += 1.0  # changes every cached key and value
    retrieval.take_prefill(model, [test])
    assert made == [1]
