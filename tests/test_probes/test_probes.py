"""Probes, directions, DAS and steering on planted directions and real activations."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from interp.errors import InterpError, UnknownNameError
from interp.probes import (
    Activations,
    collect,
    diff_of_means,
    fit_probe,
    fit_rank1_das,
    interchange,
    pca_directions,
    probe_by_site,
    projection,
    steer,
)


def planted(n=400, d=32, seed=0, strength=3.0):
    rng = np.random.default_rng(seed)
    w = rng.normal(size=d)
    w /= np.linalg.norm(w)
    y = rng.integers(0, 2, n)
    X = rng.normal(size=(n, d)) + strength * np.outer(2 * y - 1, w)
    return X, y, w


def cos(a, b):
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    return abs(a @ b) / np.linalg.norm(a) / np.linalg.norm(b)


def test_probe_and_directions_recover_a_planted_direction():
    X, y, w = planted()
    r = fit_probe(X, y)
    assert r.kind == "logistic" and r.score > 0.95 and r.ci_low <= r.score <= r.ci_high
    assert cos(r.direction, w) > 0.9
    assert cos(diff_of_means(X, y), w) > 0.9
    assert cos(pca_directions(X, 1)[0], w) > 0.9


def test_ridge_probe_for_values():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(300, 10))
    y = X @ np.arange(10.0) + rng.normal(scale=0.1, size=300)
    r = fit_probe(X, y)
    assert r.kind == "ridge" and r.score > 0.99 and r.ci_low < r.score <= r.ci_high + 1e-9


def test_rank1_das_recovers_the_causal_direction():
    """A fixed readout uses only w; interchanging along u flips it only when u is w."""
    X, y, w = planted(n=256, d=16, seed=2)
    wt = torch.tensor(w)
    Xt = torch.tensor(X)
    rng = np.random.default_rng(3)
    src = rng.permutation(len(X))
    base, source, target = Xt, Xt[src], torch.tensor(y[src])

    def readout(h):
        s = 3.0 * (h @ wt)
        return torch.stack([-s, s], dim=-1)

    def loss(u):
        return torch.nn.functional.cross_entropy(readout(interchange(base, source, u)), target)

    u = fit_rank1_das(loss, d=16, steps=300, lr=0.05, seed=0)
    assert cos(u.numpy(), w) > 0.9
    assert abs(float(u.norm()) - 1.0) < 1e-9


def test_steering_changes_exactly_the_targeted_projection(tiny):
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1, 100, (2, 9), generator=g)
    u = torch.randn(tiny.cfg.d_model, generator=g)
    site = "blocks.1.hook_resid_post"
    with tiny.trace(ids, sites=site) as clean:
        pass
    with tiny.trace(ids, sites=site, interventions={site: steer(u, value=7.5)}) as tr:
        pass
    h0, h1 = clean[site].double(), tr[site].double()
    un = (u / u.norm()).double()
    assert torch.allclose(projection(h1[:, -1], un), torch.tensor(7.5, dtype=torch.float64), atol=1e-4)
    ortho = lambda h: h - (h @ un)[..., None] * un  # noqa: E731
    torch.testing.assert_close(ortho(h1[:, -1]), ortho(h0[:, -1]), atol=1e-5, rtol=1e-5)
    assert torch.equal(h1[:, :-1], h0[:, :-1])
    with tiny.trace(ids, sites=site, interventions={site: steer(u, add=2.0)}) as tr2:
        pass
    assert torch.allclose(projection(tr2[site][:, -1], un) - projection(h0[:, -1], un), torch.tensor(2.0, dtype=torch.float64), atol=1e-4)
    with pytest.raises(ValueError, match="exactly one"):
        steer(u)


def test_bad_input():
    X, y, _ = planted(n=40)
    with pytest.raises(InterpError, match="at least two classes.*all 1"):
        fit_probe(X, np.ones(40, dtype=int))
    Xn = X.copy()
    Xn[3, 2] = np.nan
    with pytest.raises(InterpError, match="NaN"):
        fit_probe(Xn, y)
    with pytest.raises(InterpError, match="no labels"):
        probe_by_site(Activations({"blocks.0.hook_resid_post": X}))
    with pytest.raises(InterpError, match="same mean"):
        diff_of_means(np.ones((4, 3)), np.array([0, 0, 1, 1]))


@pytest.mark.real_model
def test_collect_positions_shards_and_concept_depth(smollm2, tmp_path):
    cities = [("Paris", "France"), ("Rome", "Italy"), ("Madrid", "Spain"), ("Berlin", "Germany"),
              ("Lisbon", "Portugal"), ("Vienna", "Austria"), ("Athens", "Greece"), ("Dublin", "Ireland")]
    texts = [f"{c} is the capital of {k}." for c, k in cities] + [f"{c} is a kind of {k} cheese." for c, k in cities]
    labels = [1] * len(cities) + [0] * len(cities)
    acts = collect(smollm2, texts, labels, sites=["blocks.2.hook_resid_post", "blocks.20.hook_resid_post"],
                   position="last", batch_size=5, out=tmp_path / "acts", progress=False)
    assert acts.X["blocks.2.hook_resid_post"].shape == (16, smollm2.cfg.d_model)
    again = Activations.load(tmp_path / "acts")
    np.testing.assert_array_equal(again.X["blocks.20.hook_resid_post"], acts.X["blocks.20.hook_resid_post"])
    np.testing.assert_array_equal(again.labels, labels)
    # The mean and a named token agree with a direct trace.
    mean = collect(smollm2, texts[:2], sites="blocks.2.hook_resid_post", position="mean", progress=False)
    with smollm2.trace(texts[0], sites="blocks.2.hook_resid_post") as tr:
        pass
    np.testing.assert_allclose(mean.X["blocks.2.hook_resid_post"][0], tr["blocks.2.hook_resid_post"][0].mean(0).numpy(), atol=1e-5)
    tok = collect(smollm2, texts[:3], sites="blocks.2.hook_resid_post", position={"token": " is"}, progress=False)
    assert tok.X["blocks.2.hook_resid_post"].shape == (3, smollm2.cfg.d_model)
    table = probe_by_site(acts, test_size=0.5)
    assert list(table["layer"]) == [2, 20] and table["score"].between(0, 1).all()
    with pytest.raises(UnknownNameError, match="unknown site"):
        collect(smollm2, texts, sites="blocks.2.hook_nope", progress=False)
    with pytest.raises(InterpError, match="does not occur"):
        collect(smollm2, ["no match here"], sites="blocks.2.hook_resid_post", position={"token": " Paris"}, progress=False)


def test_steering_applies_at_every_generate_step(tiny):
    """Under ``generate`` (KV cache) the newest token is steered at each step: its projection is
    the value, earlier prompt positions are untouched, and the continuation is the one a greedy
    loop of full forwards gets when every position from the prompt's last on is steered."""
    prompt = torch.randint(1, 100, (1, 8), generator=torch.Generator().manual_seed(5))
    u = torch.randn(tiny.cfg.d_model, generator=torch.Generator().manual_seed(6))
    un = (u / u.norm()).double()
    site, value, n_new = "blocks.1.hook_resid_post", 40.0, 4
    with tiny.trace(sites=site, interventions={site: steer(u, value=value)}) as tr:
        steered = tiny.generate(prompt, max_new_tokens=n_new)
    steps = tr.steps(site)
    assert [s.shape[1] for s in steps] == [8] + [1] * (n_new - 1)
    for s in steps:
        assert torch.allclose(projection(s[:, -1], un), torch.tensor(value, dtype=torch.float64), atol=1e-3)
    with tiny.trace(prompt, sites=site) as clean:
        pass
    torch.testing.assert_close(steps[0][:, :-1], clean[site][:, :-1])
    ids = prompt.clone()
    for _ in range(n_new):
        iv = {site: steer(u, value=value, positions=list(range(prompt.shape[1] - 1, ids.shape[1])))}
        ids = torch.cat([ids, tiny.run(ids, interventions=iv)[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert steered == tiny.tokenizer.batch_decode(ids[:, prompt.shape[1]:])
    assert steered != tiny.generate(prompt, max_new_tokens=n_new)  # the steering mattered
