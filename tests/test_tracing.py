"""Tracing and interventions on tiny random models of every adapter family."""

from __future__ import annotations

import copy
import gc
import weakref

import pytest
import torch
from tiny_models import VOCAB, NullTokenizer, build, padded_batch

import interp
from interp import Model
from interp.core import interventions as iv
from interp.core.masks import position_kwargs
from interp.errors import BadInputError, OutOfRangeError, PromptTooLongError, UnknownNameError
from interp.models import corpus


def all_sites(model: Model) -> list[str]:
    return model.site_names()


def test_hooks_leave_logits_bit_identical(family):
    hf = build(family)
    reference = copy.deepcopy(hf)  # never wrapped: the model's own SDPA path
    model = Model(hf, NullTokenizer())
    batch = padded_batch()
    with torch.no_grad():  # positions counted from the mask, as every forward of interp passes them
        expected = reference(**batch, **position_kwargs(batch["attention_mask"])).logits
    with model.trace(batch, sites=all_sites(model)) as tr:
        pass
    assert torch.equal(tr.logits, expected)
    assert len(tr.keys()) == len(model.site_names())


def text_batch(lengths=(256, 231, 203)) -> dict[str, torch.Tensor]:
    """Left-padded windows of the shipped natural text, one byte per token.

    The tiny models have a random 128-token vocabulary and no tokenizer, and the text is
    ASCII, so its bytes are valid token ids (none is 0, the pad id) and keep natural text's
    repeats of letters, words and phrases.
    """
    data = torch.tensor(list(corpus.text("alice").encode("ascii")), dtype=torch.long)
    assert 0 < int(data.min()) and int(data.max()) < VOCAB
    width = max(lengths)
    ids = torch.zeros(len(lengths), width, dtype=torch.long)
    mask = torch.zeros(len(lengths), width, dtype=torch.long)
    for i, n in enumerate(lengths):
        start = 1000 + 9973 * i  # a different passage per row
        ids[i, width - n :] = data[start : start + n]
        mask[i, width - n :] = 1
    return {"input_ids": ids, "attention_mask": mask}


def test_attention_pattern_matches_eager(family):
    """On 200-256 tokens of natural text in a padded batch, every layer and head, fp32."""
    model = Model(build(family), NullTokenizer())
    batch = text_batch()
    assert batch["input_ids"].shape[1] <= model.cfg.n_ctx
    with model.trace(batch, sites="blocks.*.attn.hook_[qk]") as tr:
        pass
    model.hf.set_attn_implementation("interp_eager")
    with torch.no_grad():
        eager = model.hf(**batch, **position_kwargs(batch["attention_mask"]), output_attentions=True).attentions
    real = batch["attention_mask"].bool()  # compare rows of real tokens only
    assert real.sum(1).min() >= 200
    for layer in range(model.cfg.n_layers):
        ours = interp.attention_pattern(tr, layer)
        diff = (ours - eager[layer]).abs().amax(dim=(1, 3))  # [batch, rows]
        assert diff[real].max() < 1e-5, (family, layer, float(diff[real].max()))
        sums = ours.sum(-1)[real.unsqueeze(1).expand(-1, ours.shape[1], -1)]
        torch.testing.assert_close(sums, torch.ones_like(sums), atol=1e-5, rtol=0)


def test_attention_pattern_selected_rows_and_heads(tiny):
    batch = padded_batch()
    with tiny.trace(batch, sites="blocks.1.attn.hook_[qk]") as tr:
        pass
    full = interp.attention_pattern(tr, 1, dtype=torch.float64)
    some = interp.attention_pattern(tr, 1, heads=[3, 0], rows=[-1, 5], dtype=torch.float64)
    assert some.shape == (2, 2, 2, full.shape[-1])
    assert torch.allclose(some, full[:, [3, 0]][:, :, [23, 5]])
    with pytest.raises(OutOfRangeError, match="head 4"):
        interp.attention_pattern(tr, 1, heads=[4])


def test_head_results_sum_to_attention_output(tiny):
    with tiny.trace(padded_batch(), sites=["blocks.*.attn.hook_result", "blocks.*.hook_attn_out"]) as tr:
        pass
    for layer in range(tiny.cfg.n_layers):
        o_proj = tiny.module(f"{tiny.adapter.layers}.{layer}.{tiny.adapter.o_proj}")
        bias = o_proj.bias if getattr(o_proj, "bias", None) is not None else 0.0
        summed = tr[f"blocks.{layer}.attn.hook_result"].sum(dim=2) + bias
        torch.testing.assert_close(summed, tr[f"blocks.{layer}.hook_attn_out"], atol=1e-5, rtol=1e-5)


def test_shapes_follow_the_model(tiny):
    c = tiny.cfg
    with tiny.trace(padded_batch(), sites="blocks.0.*") as tr:
        pass
    b, p = 2, 24
    assert tr["blocks.0.attn.hook_q"].shape == (b, p, c.n_heads, c.d_head)
    assert tr["blocks.0.attn.hook_k"].shape == (b, p, c.n_kv_heads, c.d_head)
    assert tr["blocks.0.attn.hook_z"].shape == (b, p, c.n_heads, c.d_head)
    assert tr["blocks.0.attn.hook_result"].shape == (b, p, c.n_heads, c.d_model)
    assert tr["blocks.0.mlp.hook_post"].shape == (b, p, c.d_mlp)
    assert tr["blocks.0.hook_resid_post"].shape == (b, p, c.d_model)


def test_residual_stream_is_consistent(tiny):
    """resid_post = resid_pre + attn_out + mlp_out for sequential pre-norm blocks."""
    if tiny.cfg.model_type in ("gemma3_text",) or "blocks.{l}.hook_resid_mid" not in tiny.site_templates:
        pytest.skip("sandwich norms or parallel blocks change the sum")
    with tiny.trace(padded_batch(), sites="blocks.1.hook_*") as tr:
        pass
    pre, mid, post = (tr[f"blocks.1.hook_resid_{s}"] for s in ("pre", "mid", "post"))
    torch.testing.assert_close(mid, pre + tr["blocks.1.hook_attn_out"], atol=1e-5, rtol=0)
    torch.testing.assert_close(post, mid + tr["blocks.1.hook_mlp_out"], atol=1e-5, rtol=0)
    assert torch.equal(tr["blocks.1.hook_attn_in"], pre) and torch.equal(tr["blocks.1.hook_mlp_in"], mid)


def test_branch_inputs_edit_their_branch_only(tiny):
    """An edit at hook_attn_in / hook_mlp_in changes that branch's input, not the residual stream
    beside it; hook_resid_mid, where the layer keeps its own copy of the residual, refuses edits."""
    if tiny.cfg.model_type in ("gemma3_text",) or "blocks.{l}.hook_mlp_in" not in tiny.site_templates:
        pytest.skip("sandwich norms or parallel blocks change the sum")
    sites = ["blocks.1.hook_resid_pre", "blocks.1.hook_resid_mid", "blocks.1.hook_attn_out", "blocks.1.hook_mlp_out",
             "blocks.1.hook_resid_post"]
    with tiny.trace(padded_batch(), sites=sites) as base:
        pass
    for edited, branch in (("blocks.1.hook_attn_in", "blocks.1.hook_attn_out"), ("blocks.1.hook_mlp_in", "blocks.1.hook_mlp_out")):
        with tiny.trace(padded_batch(), sites=sites, interventions={edited: iv.scale(0.0)}) as tr:
            pass
        assert not torch.allclose(tr[branch], base[branch])
        pre, mid, post = (tr[f"blocks.1.hook_resid_{s}"] for s in ("pre", "mid", "post"))
        torch.testing.assert_close(mid, pre + tr["blocks.1.hook_attn_out"], atol=1e-5, rtol=0)
        torch.testing.assert_close(post, mid + tr["blocks.1.hook_mlp_out"], atol=1e-5, rtol=0)
        # the stream beside the branch is untouched: only the branch saw zeros
        assert torch.equal(pre, base["blocks.1.hook_resid_pre"]) and float(pre.abs().max()) > 0
    with pytest.raises(BadInputError, match="hook_mlp_in"):
        tiny.run(padded_batch(), interventions={"blocks.1.hook_resid_mid": iv.scale(0.0)})


def test_hooks_removed_even_when_the_body_raises(tiny):
    modules = list(tiny.hf.modules())
    with pytest.raises(RuntimeError, match="boom"):
        with tiny.trace(padded_batch(), sites=tiny.site_names(), interventions={"blocks.0.attn.hook_q": iv.zero()}):
            raise RuntimeError("boom")
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in modules)
    assert all(not getattr(m, "_interp_hooks", []) for m in modules)


def test_hooks_removed_when_the_forward_raises(tiny):
    def explode(x, site):
        raise ValueError("bad intervention")

    with pytest.raises(ValueError, match="bad intervention"):
        with tiny.trace(padded_batch(), interventions={"blocks.1.mlp.hook_post": explode}):
            pass
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in tiny.hf.modules())
    with torch.no_grad():
        batch = padded_batch()
        assert torch.equal(tiny.run(batch), tiny.hf(**batch, **position_kwargs(batch["attention_mask"])).logits)


def _interp_state(model: Model) -> int:
    """Hooks of any kind left on the model: PyTorch hooks and interp's per-module lists."""
    lists = [v for m in model.hf.modules() for k, v in m.__dict__.items() if k.startswith("_interp") and isinstance(v, list)]
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.hf.modules()) + sum(map(len, lists))


def test_an_install_that_fails_midway_removes_what_it_installed(monkeypatch):
    model = Model(build("llama"), NullTokenizer())
    batch = padded_batch()
    before = model.run(batch)
    real, calls, installed = model.module, [], []

    def module(path: str):  # the fifth module the trace looks up cannot be found
        calls.append(path)
        if len(calls) == 5:
            installed.append(_interp_state(model))
            raise AttributeError(f"no module {path}")
        return real(path)

    monkeypatch.setattr(model, "module", module)
    sites = ["blocks.0.hook_resid_pre", "blocks.0.attn.hook_q", "blocks.0.attn.hook_z", "blocks.1.hook_resid_post",
             "blocks.1.mlp.hook_post", "blocks.2.hook_resid_post", "logits"]
    with pytest.raises(AttributeError, match="no module"):
        with model.trace(batch, sites=sites, observe=lambda *a: None, mask_edits={1: lambda m, mask, q, k: mask}):
            pass
    monkeypatch.undo()
    assert installed[0] >= 4  # the failure came after hooks were installed ...
    assert _interp_state(model) == 0 and model.open_traces == ()  # ... and they are all gone
    assert torch.equal(model.run(batch), before)


def test_repeated_traces_do_not_grow(tiny):
    refs = []
    for _ in range(5):
        with tiny.trace(padded_batch(), sites="blocks.*.attn.hook_q") as tr:
            pass
        refs.append(weakref.ref(tr))
        del tr
    gc.collect()
    assert all(r() is None for r in refs)
    assert sum(len(m._forward_hooks) + len(getattr(m, "_interp_hooks", [])) for m in tiny.hf.modules()) == 0


def test_positions_and_reducers_keep_little(tiny):
    norms = {}
    with tiny.trace(
        padded_batch(),
        sites="blocks.*.hook_resid_post",
        positions=[-1],
        reduce={"blocks.*.attn.hook_q": lambda q: q.norm(dim=-1).mean()},
    ) as tr:
        norms = {k: tr[k] for k in tr.keys() if "hook_q" in k}
    assert tr["blocks.0.hook_resid_post"].shape == (2, 1, tiny.cfg.d_model)
    assert len(norms) == tiny.cfg.n_layers and all(v.ndim == 0 for v in norms.values())


def test_zero_one_head_changes_only_that_head(tiny):
    batch = padded_batch()
    with tiny.trace(batch, sites="blocks.1.attn.hook_z", interventions={"blocks.1.attn.hook_z": iv.zero(heads=2)}) as tr:
        pass
    with tiny.trace(batch, sites="blocks.1.attn.hook_z") as clean:
        pass
    z, z0 = tr["blocks.1.attn.hook_z"], clean["blocks.1.attn.hook_z"]
    assert torch.all(z[:, :, 2] == 0)
    keep = [h for h in range(tiny.cfg.n_heads) if h != 2]
    assert torch.equal(z[:, :, keep], z0[:, :, keep])
    assert not torch.equal(tr.logits, clean.logits)


def test_patch_from_clean_run_restores_clean_logits(tiny):
    g = torch.Generator().manual_seed(1)
    clean_ids = torch.randint(1, VOCAB, (1, 12), generator=g)
    corrupt_ids = clean_ids.clone()
    corrupt_ids[0, 3] = (corrupt_ids[0, 3] + 1) % VOCAB
    site = "blocks.0.hook_resid_pre"
    with tiny.trace(clean_ids, sites=site) as clean:
        pass
    patched = tiny.run(corrupt_ids, interventions={site: iv.patch(clean)})
    torch.testing.assert_close(patched, clean.logits, atol=1e-5, rtol=0)
    # Patching a site with its own value changes nothing.
    with tiny.trace(corrupt_ids, sites="blocks.1.hook_mlp_in" if "blocks.{l}.hook_mlp_in" in tiny.site_templates else "blocks.1.hook_resid_pre") as own:
        pass
    site2 = own.keys()[0]
    assert torch.equal(tiny.run(corrupt_ids, interventions={site2: iv.patch(own)}), own.logits)


def test_set_add_scale_mean(tiny):
    batch = padded_batch()
    site = "blocks.2.mlp.hook_post"
    with tiny.trace(batch, sites=site, interventions={site: iv.set_value(5.0, units=[0, 3], positions=[-1])}) as tr:
        pass
    post = tr[site]
    assert torch.all(post[:, -1, [0, 3]] == 5.0)
    with tiny.trace(batch, sites=site) as clean:
        pass
    assert torch.equal(post[:, :-1], clean[site][:, :-1])
    with tiny.trace(batch, sites=site, interventions={site: [iv.scale(2.0), iv.add(1.0)]}) as tr2:
        pass
    torch.testing.assert_close(tr2[site], clean[site] * 2 + 1)
    mean = clean[site].mean(dim=(0, 1))
    with tiny.trace(batch, sites=site, interventions={site: iv.mean_ablate(mean)}) as tr3:
        pass
    torch.testing.assert_close(tr3[site], mean.expand_as(clean[site]))


def test_intervention_on_queries_and_keys(tiny):
    """Zeroed queries of one head, or zeroed keys of one kv head (every query head of its group),
    make those heads attend uniformly over their visible keys: in the pattern recomputed from the
    captured q and k, and in the forward pass itself, whose mixed values ``z`` are then the mean
    of the visible values."""
    ids = torch.randint(1, VOCAB, (1, 10), generator=torch.Generator().manual_seed(3))
    group = tiny.cfg.n_heads // tiny.cfg.n_kv_heads
    sites = ["blocks.0.attn.hook_q", "blocks.0.attn.hook_k", "blocks.0.attn.hook_v", "blocks.0.attn.hook_z"]
    for site, zeroed, heads in (("blocks.0.attn.hook_q", 1, [1]),
                                ("blocks.0.attn.hook_k", tiny.cfg.n_kv_heads - 1,
                                 list(range((tiny.cfg.n_kv_heads - 1) * group, tiny.cfg.n_heads)))):
        with tiny.trace(ids, sites=sites, interventions={site: iv.zero(heads=[zeroed])}) as tr:
            pass
        untouched = [i for i in range(tr[site].shape[2]) if i != zeroed]
        assert torch.all(tr[site][:, :, zeroed] == 0), site
        assert not untouched or tr[site][:, :, untouched].abs().sum() > 0, site
        pattern = interp.attention_pattern(tr, 0, heads=heads, dtype=torch.float64)[0]  # [heads, q, k]
        v, z = tr["blocks.0.attn.hook_v"][0].double(), tr["blocks.0.attn.hook_z"][0].double()  # [pos, (kv) heads, d]
        spec = tr.specs[0]
        for n, h in enumerate(heads):
            for i in range(10):
                visible = [j for j in range(i + 1) if spec.sliding_window is None or i - j < spec.sliding_window]
                torch.testing.assert_close(pattern[n, i, visible],
                                           torch.full((len(visible),), 1 / len(visible), dtype=torch.float64))
                torch.testing.assert_close(z[i, h], v[visible, h // group].mean(0), atol=1e-5, rtol=1e-4)
        others = [h for h in range(tiny.cfg.n_heads) if h not in heads]
        last_rows = interp.attention_pattern(tr, 0, heads=others, dtype=torch.float64)[0, :, -1, :] if others else None
        assert last_rows is None or not torch.allclose(last_rows, torch.full_like(last_rows, 0.1)), site  # the others


def test_interventions_apply_during_generate(tiny):
    prompt = torch.randint(1, VOCAB, (1, 8), generator=torch.Generator().manual_seed(4))
    target = 7
    steer = torch.zeros(tiny.cfg.d_vocab)
    steer[target] = 1e4
    out = tiny.generate(prompt, max_new_tokens=4, interventions={"logits": iv.add(steer)})
    assert out == [" ".join([str(target)] * 4)]
    # Captures under generate: the prompt call, then one call per new token.
    with tiny.trace(sites="blocks.0.attn.hook_q") as tr:
        tiny.generate(prompt, max_new_tokens=3)
    steps = tr.steps("blocks.0.attn.hook_q")
    assert [s.shape[1] for s in steps] == [8, 1, 1]


def test_bad_input_errors(tiny):
    with pytest.raises(UnknownNameError, match=r"unknown site 'blocks.0.attn.hook_x'.*hook_q"):
        tiny.resolve("blocks.0.attn.hook_x")
    with pytest.raises(OutOfRangeError, match=r"layer 9 is out of range: valid layers are 0..2"):
        tiny.resolve("blocks.9.attn.hook_q")
    with pytest.raises(PromptTooLongError, match="context window of 256"):
        tiny.run(torch.ones(1, 300, dtype=torch.long))
    with pytest.raises(OutOfRangeError, match="head"):
        tiny.check_heads([0, 99])
    with pytest.raises(ValueError, match="per-head site"):
        tiny.run(padded_batch(), interventions={"blocks.0.hook_resid_pre": iv.zero(heads=[0])})
    with pytest.raises(KeyError, match="not captured"):
        with tiny.trace(padded_batch(), sites="logits") as tr:
            tr["blocks.0.attn.hook_q"]


def test_generate_beyond_the_context_window_raises(tiny):
    prompt = torch.randint(1, VOCAB, (1, 250), generator=torch.Generator().manual_seed(5))
    with pytest.raises(PromptTooLongError, match=r"prompt of 250 tokens \+ max_new_tokens=10 is 260 tokens but "
                       r".* context window of 256; ask for at most 6 new tokens"):
        tiny.generate(prompt, max_new_tokens=10)
    full = torch.randint(1, VOCAB, (2, 256), generator=torch.Generator().manual_seed(6))
    with pytest.raises(PromptTooLongError, match=r"prompt of 256 tokens .* context window of 256; shorten the prompt"):
        tiny.generate(full, max_new_tokens=1)
    assert len(tiny.generate(prompt, max_new_tokens=6)) == 1  # exactly filling the window is fine


def test_attention_pattern_layer_out_of_range_or_not_captured(tiny):
    with tiny.trace(padded_batch(), sites="blocks.1.attn.hook_[qk]") as tr:
        pass
    n = tiny.cfg.n_layers
    for layer in (n, -1):
        with pytest.raises(OutOfRangeError, match=rf"layer {layer} is out of range: valid layers are 0..{n - 1}"):
            interp.attention_pattern(tr, layer)
    with pytest.raises(KeyError, match=r"site 'blocks.0.attn.hook_q' was not captured .*blocks.1.attn.hook_q"):
        interp.attention_pattern(tr, 0)


def test_globs_expand_in_model_order(tiny):
    names = [s.name for s in tiny.resolve("blocks.*.attn.hook_q")]
    assert names == [f"blocks.{i}.attn.hook_q" for i in range(tiny.cfg.n_layers)]
    assert [s.name for s in tiny.resolve(["logits", "logits"])] == ["logits"]


def test_unsupported_architecture_is_named():
    from transformers import BertConfig, BertLMHeadModel

    hf = BertLMHeadModel(BertConfig(vocab_size=32, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32, is_decoder=True))
    with pytest.raises(UnknownNameError, match="unknown architecture 'bert'.*llama"):
        Model(hf, NullTokenizer())


def test_site_dims_match_the_captured_shapes(tiny):
    """The widths interventions are checked against are the widths the sites really have."""
    batch = padded_batch(lengths=(9, 6))
    with tiny.trace(batch, sites=all_sites(tiny)) as tr:
        pass
    for name in tiny.site_names():
        assert tuple(tr[name].shape[2:]) == tuple(size for _, size in tiny.site_dims(name)), name


def test_trace_records_positions_and_reducers(tiny):
    with tiny.trace(padded_batch(), sites="blocks.0.attn.hook_q", positions=[-1],
                    reduce={"blocks.0.attn.hook_k": lambda k: k.norm()}) as tr:
        pass
    assert tr.kept_positions == {"blocks.0.attn.hook_q": [-1]} and tr.reduced == {"blocks.0.attn.hook_k"}
    assert tr.ran_forward and not tiny.open_traces
    with tiny.trace(padded_batch(), sites="blocks.0.attn.hook_q") as full:
        assert tiny.open_traces == (full,)
    assert full.kept_positions == {} and full.reduced == set()


def test_act_name_gives_the_transformerlens_full_names():
    from interp import act_name
    from interp.errors import BadInputError, UnknownNameError

    assert act_name("z", 3) == "blocks.3.attn.hook_z"
    assert act_name("resid_pre", 0) == "blocks.0.hook_resid_pre"
    assert act_name("post", 2) == act_name("mlp_post", 2) == "blocks.2.mlp.hook_post"
    assert act_name("embed") == "hook_embed" and act_name("normalized") == "ln_final.hook_normalized"
    with pytest.raises(UnknownNameError, match="unknown short site name 'pattern'.*valid short site names: attn_in, attn_out"):
        act_name("pattern", 0)
    with pytest.raises(BadInputError, match=r"act_name\('z', layer\)'s layer must be an integer of at least 0, got None"):
        act_name("z")
    with pytest.raises(BadInputError, match="takes no layer"):
        act_name("embed", 1)


def test_run_with_cache_returns_logits_and_every_site_as_transformerlens_does(tiny):
    from interp import act_name
    from interp.errors import BadInputError

    ids = torch.randint(1, tiny.cfg.d_vocab, (2, 9), generator=torch.Generator().manual_seed(0))
    logits, cache = tiny.run_with_cache(ids)
    assert torch.equal(logits, tiny.run(ids))
    assert not any(k.endswith("hook_result") for k in cache.keys())
    assert set(cache.keys()) == {n for n in tiny.site_names() if not n.endswith("hook_result")}
    with tiny.trace(ids, sites="blocks.1.attn.hook_z") as tr:
        pass
    assert torch.equal(cache["z", 1], tr["blocks.1.attn.hook_z"]) and cache[act_name("z", 1)] is cache["z", 1]
    _, some = tiny.run_with_cache(ids, names_filter=lambda name: name.endswith("hook_resid_post"))
    assert some.keys() == [f"blocks.{layer}.hook_resid_post" for layer in range(tiny.cfg.n_layers)]
    _, globbed = tiny.run_with_cache(ids, names_filter="blocks.*.hook_resid_post")
    assert globbed.keys() == some.keys()
    with pytest.raises(BadInputError, match="names_filter matches no site"):
        tiny.run_with_cache(ids, names_filter=lambda name: False)


def test_trace_observers_and_early_stop_are_installed_and_removed_by_the_trace(tiny):
    """``observe=`` feeds each layer's final q/k to a function, ``stop_after=`` ends the forward
    after that layer's attention; both are gone after the block, also when it raises."""
    from interp.core.attention import observers_of
    from interp.errors import BadInputError

    ids = torch.randint(1, tiny.cfg.d_vocab, (1, 8), generator=torch.Generator().manual_seed(0))
    seen: list[int] = []
    with tiny.trace(ids, observe=lambda layer, q, k, spec, lse: seen.append(layer)) as tr:
        pass
    assert seen == list(range(tiny.cfg.n_layers)) and tr.logits is not None
    seen.clear()
    with tiny.trace(ids, observe=lambda layer, q, k, spec, lse: seen.append(layer), observe_layers=[0],
                    stop_after=0, sites="blocks.1.hook_resid_pre") as tr:
        pass
    assert seen == [0] and tr.logits is None and "blocks.1.hook_resid_pre" not in tr  # stopped in layer 0
    modules = [tiny.module(f"{tiny.adapter.layers}.{la}.{tiny.adapter.attn}") for la in range(tiny.cfg.n_layers)]
    with pytest.raises(RuntimeError, match="inside"):
        with tiny.trace(observe=lambda *a: None, stop_after=1):
            raise RuntimeError("inside")
    assert all(not observers_of(m) for m in modules)
    with pytest.raises(BadInputError, match="observe must be a function"):
        with tiny.trace(ids, observe=3):
            pass
    with pytest.raises(OutOfRangeError):
        with tiny.trace(ids, stop_after=99):
            pass


def test_a_left_padded_row_traces_as_it_does_alone(tiny):
    """Positions count each row's real tokens, so padding changes no activation, also in
    families with absolute position embeddings (GPT-2), with and without a key/value cache."""
    from interp.core.kv_cache import run_cached

    batch = padded_batch()
    n = int(batch["attention_mask"][1].sum())
    alone = batch["input_ids"][1:, -n:]
    with tiny.trace(batch, sites="blocks.1.hook_resid_post") as padded:
        pass
    with tiny.trace(alone, sites="blocks.1.hook_resid_post") as single:
        pass
    torch.testing.assert_close(padded["blocks.1.hook_resid_post"][1, -n:], single["blocks.1.hook_resid_post"][0],
                               atol=1e-5, rtol=1e-5)
    with torch.no_grad():  # prefill all but the last token, then one cached step
        _, cache = run_cached(tiny.hf, input_ids=batch["input_ids"][:, :-1], attention_mask=batch["attention_mask"][:, :-1])
        out, _ = run_cached(tiny.hf, cache, input_ids=batch["input_ids"][:, -1:], attention_mask=batch["attention_mask"])
    torch.testing.assert_close(out.logits[1, -1], tiny.run(alone)[0, -1], atol=1e-4, rtol=1e-4)


def test_mask_edits_reach_the_chosen_layers_and_are_removed(tiny):
    """``trace(mask_edits=...)``: each chosen layer's attention gets the edited mask (knockout and
    cache compression are such edits), the identity edit changes nothing, and the hooks go."""
    batch = padded_batch()
    seen: list[int] = []

    def same(module, mask, query, key):
        seen.append(id(module))
        return mask

    with tiny.trace(batch) as plain:
        pass
    with tiny.trace(batch, mask_edits={0: same, 1: same}) as edited:
        pass
    attn = [tiny.module(f"{tiny.adapter.layers}.{la}.{tiny.adapter.attn}") for la in (0, 1)]
    assert seen == [id(m) for m in attn]
    assert torch.equal(edited.logits, plain.logits)
    assert all(not m._interp_mask_edits for m in attn)
    with pytest.raises(OutOfRangeError):
        with tiny.trace(batch, mask_edits={9: same}):
            pass
    with pytest.raises(BadInputError, match="mask_edits"):
        with tiny.trace(batch, mask_edits={0: "not a function"}):
            pass
