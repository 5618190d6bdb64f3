"""Patching, attribution, ablation and circuit graphs on tiny models and the hand-wired induction circuit."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from tiny_models import NullTokenizer, build
from wired_models import CharTokenizer, wired_gpt2

from interp import Model
from interp.circuits.ablation import ablate_heads, ablation_scan
from interp.circuits.attribution import attribution_patching, check_against_patching
from interp.circuits.graph import build_circuit
from interp.circuits.patching import activation_patching, logit_diff
from interp.errors import OutOfRangeError, UnknownNameError

# BOS, then 3 7 2 9 5, then 3 7 2 9: induction predicts 5 at the end.
CLEAN = torch.tensor([[0, 3, 7, 2, 9, 5, 3, 7, 2, 9], [0, 4, 8, 6, 12, 10, 4, 8, 6, 12]])
# The earlier copy of the last token is replaced, so there is nothing to induct from.
CORRUPT = torch.tensor([[0, 3, 7, 2, 11, 5, 3, 7, 2, 9], [0, 4, 8, 6, 13, 10, 4, 8, 6, 12]])
GOOD, BAD = [5, 10], [11, 13]
PLANTED = {(0, 0), (1, 0)}  # previous-token head and induction head


@pytest.fixture(scope="module")
def wired():
    return Model(wired_gpt2(), CharTokenizer(), name="wired")


def metric():
    return logit_diff(GOOD, BAD)


def test_the_planted_circuit_is_there(wired):
    logits_clean, logits_corrupt = wired.run(CLEAN), wired.run(CORRUPT)
    m = metric()
    assert float(m(logits_clean).mean()) > float(m(logits_corrupt).mean()) + 1.0


def test_patching_finds_the_planted_heads(wired):
    res = activation_patching(wired, CLEAN, CORRUPT, metric(), sites="blocks.*.attn.hook_z", progress=False)
    assert list(dict.fromkeys(res.df["site"])) == ["blocks.0.attn.hook_z", "blocks.1.attn.hook_z"]
    top = res.df.reindex(res.df["effect"].abs().sort_values(ascending=False).index).head(2)
    assert {(int(r.layer), int(r.head)) for r in top.itertuples()} == PLANTED
    assert (top["effect"] > 0.3).all()
    others = res.df[[(int(a), int(b)) not in PLANTED for a, b in zip(res.df["layer"], res.df["head"], strict=True)]]
    assert others["effect"].abs().max() < 0.05
    fig = res.heatmap("blocks.*.attn.hook_z")
    assert fig.data[0].z.shape == (2, 2)
    # one layer's name or the short name draw the same site over all its layers
    assert res.heatmap("blocks.1.attn.hook_z").data[0].z.shape == res.heatmap("z").data[0].z.shape == (2, 2)
    assert list(res.figures()) == ["heatmap_blocks.*.attn.hook_z"]


def test_attribution_finds_the_planted_heads_and_agrees_with_patching(wired):
    att = attribution_patching(wired, CLEAN, CORRUPT, metric())
    heads = att[att["site"].str.endswith(".attn.hook_z")]
    top = heads.reindex(heads["effect"].abs().sort_values(ascending=False).index).head(2)
    assert {(int(r.layer), int(r.head)) for r in top.itertuples()} == PLANTED
    assert set(att["site"]) == {f"blocks.{la}.{s}" for la in range(2) for s in ("attn.hook_z", "mlp.hook_post")}
    assert len(att[att["site"].str.endswith(".mlp.hook_post")]) == 2 * wired.cfg.d_mlp  # every neuron is scored
    check = check_against_patching(wired, CLEAN, CORRUPT, metric(), att, n=6, top=2)
    assert len(check) == 6
    sign = np.sign(check["attribution"].to_numpy()[:2]) == np.sign(check["patched"].to_numpy()[:2])
    assert sign.all()


def test_attribution_matches_exact_patching_when_the_model_is_linear_in_the_site():
    # For the last layer's z the metric is linear in z (o_proj, the final norm aside), so gradient x
    # difference should be close to the real patch; compare on a tiny random llama (GQA).
    model = Model(build("llama", seed=3), NullTokenizer(), name="tiny-llama")
    g = torch.Generator().manual_seed(0)
    clean = torch.randint(1, 128, (2, 12), generator=g)
    corrupt = clean.clone()
    corrupt[:, 3] = torch.randint(1, 128, (2,), generator=g)
    m = logit_diff([5, 6], [7, 8])
    att = attribution_patching(model, clean, corrupt, m, sites="blocks.*.attn.hook_z")
    real = activation_patching(model, clean, corrupt, m, sites="blocks.2.attn.hook_z", progress=False).df
    assert real.equals(activation_patching(model, clean, corrupt, m, sites="z", layers=[2], progress=False).df)
    a = att[att["layer"] == 2].sort_values("head")["effect"].to_numpy()
    r = real.sort_values("head")["effect"].to_numpy()
    assert np.corrcoef(a, r)[0, 1] > 0.9


@pytest.mark.parametrize("family", ["llama", "mistral", "gpt2"])
def test_patching_a_site_with_its_own_value_changes_nothing(family):
    model = Model(build(family), NullTokenizer(), name=f"tiny-{family}")
    ids = torch.randint(1, 128, (2, 9), generator=torch.Generator().manual_seed(1))
    m = logit_diff(3, 4)
    res = activation_patching(model, ids, ids, m, sites=["blocks.*.attn.hook_[zkv]", "blocks.*.hook_resid_pre",
                                                          "blocks.*.mlp.hook_post"],
                              positions="each", progress=False)
    base = float(m(model.run(ids)).mean())
    assert np.allclose(res.df["metric"].to_numpy(), base, atol=1e-5)
    # k and v are indexed by kv head, z by query head.
    assert res.df[res.df["site"].str.endswith("hook_k")]["head"].max() == model.cfg.n_kv_heads - 1
    assert res.df[res.df["site"].str.endswith("hook_z")]["head"].max() == model.cfg.n_heads - 1


def test_gqa_kv_patch_touches_only_its_query_group():
    model = Model(build("llama", seed=2), NullTokenizer(), name="tiny-llama")  # 4 query heads, 2 kv heads
    g = torch.Generator().manual_seed(2)
    clean, corrupt = torch.randint(1, 128, (1, 10), generator=g), torch.randint(1, 128, (1, 10), generator=g)
    with model.trace(clean, sites="blocks.1.attn.hook_k") as ct:
        pass
    from interp.circuits.patching import Patch, patch_interventions

    fns = patch_interventions([Patch("blocks.1.attn.hook_k", 1, 1, None)], {"blocks.1.attn.hook_k": ct["blocks.1.attn.hook_k"]}, 1)
    with model.trace(corrupt, sites="blocks.1.attn.hook_z", interventions=fns) as pt:
        pass
    with model.trace(corrupt, sites="blocks.1.attn.hook_z") as base:
        pass
    z, z0 = pt["blocks.1.attn.hook_z"][0], base["blocks.1.attn.hook_z"][0]
    group = model.cfg.n_heads // model.cfg.n_kv_heads
    for h in range(model.cfg.n_heads):
        changed = not torch.allclose(z[:, h], z0[:, h])
        assert changed == (h // group == 1)


def test_ablation_methods(wired):
    m = metric()
    zero = ablation_scan(wired, CLEAN, m, method="zero", progress=False)
    assert zero.df.loc[zero["effect"].idxmin(), ["layer", "head"]].tolist() in ([1, 0], [0, 0])
    assert zero.meta["method"] == "zero" and len(zero) == 4 and "heatmap" in zero.figures()
    assert zero[(zero["layer"] == 1) & (zero["head"] == 1)]["effect"].abs().max() < 1e-5  # writes nothing
    resample = ablation_scan(wired, CLEAN, m, method="resample", reference=CORRUPT, progress=False)
    assert float(resample[(resample["layer"] == 1) & (resample["head"] == 0)]["effect"].iloc[0]) < -1.0
    mean_fns = ablate_heads(wired, [(1, 0)], "mean", reference=CLEAN)
    assert float(m(wired.run(CLEAN, interventions=mean_fns)).mean()) < float(m(wired.run(CLEAN)).mean())
    with pytest.raises(UnknownNameError, match="zero, mean, resample"):
        ablate_heads(wired, [(0, 0)], "median")
    with pytest.raises(ValueError, match="reference"):
        ablate_heads(wired, [(0, 0)], "mean")


def test_circuit_graph_keeps_the_planted_path(wired, tmp_path):
    circuit = build_circuit(wired, CLEAN, CORRUPT, metric(), node_threshold=0.1, edge_threshold=0.05)
    ids = {n["id"] for n in circuit.nodes}
    assert {"L0H0", "L1H0", "logits"} <= ids and "L1H1" not in ids
    assert any(e["source"] == "L0H0" and e["target"] == "L1H0" for e in circuit.edges)
    circuit.save(tmp_path / "c")
    assert json.loads((tmp_path / "c" / "circuit.json").read_text())["model"] == "wired"
    assert len(circuit.figure().data) >= 2


def test_patching_errors(wired):
    with pytest.raises(UnknownNameError, match="patching site"):
        activation_patching(wired, CLEAN, CORRUPT, metric(), sites=["attn"], progress=False)
    with pytest.raises(UnknownNameError, match="blocks.\\*.attn.hook_z"):  # the error lists the sites patching takes
        activation_patching(wired, CLEAN, CORRUPT, metric(), sites="blocks.*.mlp.hook_pre", progress=False)
    with pytest.raises(OutOfRangeError, match="layer"):
        activation_patching(wired, CLEAN, CORRUPT, metric(), sites="blocks.7.attn.hook_z", progress=False)
    with pytest.raises(ValueError, match="same shape"):
        activation_patching(wired, CLEAN, CORRUPT[:, :-1], metric(), progress=False)
    with pytest.raises(UnknownNameError, match="direction"):
        activation_patching(wired, CLEAN, CORRUPT, metric(), direction="sideways", progress=False)


@pytest.mark.parametrize("family", ["llama", "mistral", "gemma3", "gpt2"])
def test_shared_prefix_runs_once_and_gives_the_same_effects(family):
    """A prefix common to every input (e.g. few-shot demonstrations) served from a key/value cache."""
    model = Model(build(family), NullTokenizer(), name=f"tiny-{family}")
    g = torch.Generator().manual_seed(3)
    prefix = torch.randint(1, 128, (1, 8), generator=g).repeat(2, 1)  # longer than the sliding windows (7, 6)
    clean = torch.cat([prefix, torch.randint(1, 128, (2, 4), generator=g)], 1)
    corrupt = torch.cat([prefix, torch.randint(1, 128, (2, 4), generator=g)], 1)
    m = logit_diff([3, 5], [4, 6])
    for sites, positions in ((["z", "k"], "all"), (["resid_pre"], list(range(8, 12)))):
        full = activation_patching(model, clean, corrupt, m, sites=sites, positions=positions, progress=False).df
        fast = activation_patching(model, clean, corrupt, m, sites=sites, positions="each" if positions != "all" else "all",
                                   shared_prefix=8, logits_to_keep=1, batch_size=5, progress=False).df
        assert full[["site", "layer", "head", "position"]].equals(fast[["site", "layer", "head", "position"]])
        assert np.allclose(full["effect"], fast["effect"], atol=1e-4)
    with pytest.raises(ValueError, match="differ"):
        activation_patching(model, clean, corrupt, m, shared_prefix=9, progress=False)
    with pytest.raises(ValueError, match="shared prefix"):
        activation_patching(model, clean, corrupt, m, sites=["resid_pre"], positions=[7, 8], shared_prefix=8,
                            progress=False)
    with pytest.raises(ValueError, match="at least one position"):
        activation_patching(model, clean, corrupt, m, shared_prefix=12, progress=False)
