"""The context knob: last-token runs, the layer search, and the analysis end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from tiny_models import NullTokenizer, build

from interp import Model
from interp.cli import main
from interp.errors import InterpError
from interp.probes.directions import diff_of_means
from interp.probes.knob import (
    IntentRuns,
    KnobResult,
    Localisation,
    _random_unit,
    flip_rate,
    knob,
    last_token_states,
    localise,
    oriented,
    search_layers,
    train_das,
)
from interp.probes.knob_report import write_report
from interp.probes.knob_task import knob_items
from interp.probes.last_token import LastTokenRuns
from interp.probes.steering import steer
from interp.results.strict_json import finite


def test_last_token_runs_equal_full_forwards(tiny):
    """A one-token step over the cached prefix gives the logits of the whole forward, also with
    an intervention at the last position (every family, sliding windows included)."""
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(3, tiny.cfg.d_vocab, (5, 12), generator=g)
    choices = torch.randint(0, tiny.cfg.d_vocab, (5, 3), generator=g)
    runs = LastTokenRuns(tiny, ids, choices, batch_size=2)
    u = torch.randn(tiny.cfg.d_model, generator=g)
    for iv in (None, {"blocks.1.hook_resid_post": steer(u, value=3.0, positions=-1)}):
        full = tiny.run(ids, interventions=iv)[:, -1].gather(1, choices).numpy()
        np.testing.assert_allclose(runs.choice_logits(iv), full, atol=1e-4, rtol=1e-4)
    captured = runs.capture("blocks.0.hook_resid_post")["blocks.0.hook_resid_post"]
    with tiny.trace(ids, sites="blocks.0.hook_resid_post") as tr:
        pass
    torch.testing.assert_close(captured, tr["blocks.0.hook_resid_post"][:, -1].float(), atol=1e-4, rtol=1e-4)


def test_last_token_runs_bad_input(tiny):
    with pytest.raises(InterpError, match="choices"):
        LastTokenRuns(tiny, torch.ones(2, 5, dtype=torch.long), torch.ones(3, 2, dtype=torch.long))
    with pytest.raises(InterpError, match="two tokens"):
        LastTokenRuns(tiny, torch.ones(2, 1, dtype=torch.long), torch.ones(2, 2, dtype=torch.long))


@pytest.mark.parametrize("planted", [[2, 4], [7], [0, 1, 2, 3, 11]])
def test_search_finds_the_planted_layers(planted):
    """Recovery adds up over layers (each planted layer carries an equal share, others a little
    noise): the search returns the planted set, with O(log L + L) calls."""
    n, calls = 12, []
    weight = np.full(n, 0.01)
    weight[planted] = (1 - 0.01 * (n - len(planted))) / len(planted)

    def recovery(layers):
        calls.append(layers)
        return float(weight[layers].sum())

    assert search_layers(recovery, n, threshold=0.85) == planted
    assert len(calls) <= 2 * int(np.ceil(np.log2(n))) + n


@pytest.mark.real_model
def test_patching_every_layer_moves_the_whole_effect(smollm2):
    """The last token's residual is its embedding plus attention and MLP outputs; patching every
    layer's attention output makes it the source's, so recovery is exactly 1."""
    data = IntentRuns(smollm2, knob_items(8, seed=3))
    loc = localise(smollm2, data, "CP", single_layers=False, progress=False)
    assert abs(loc.full_recovery - 1) < 1e-3
    assert loc.recovery > 0.8 and loc.layers


@pytest.mark.real_model
def test_knob_cli_writes_the_report(smollm2, tmp_path, capsys):
    out = tmp_path / "knob"
    assert main(["knob", "smollm2-135m", "--out", str(out), "--items", "24", "--das-steps", "5", "--random", "1",
                 "--quiet"]) == 0
    doc = json.loads((out / "knob.json").read_text())
    assert set(doc["accuracy"]) == {"prior", "context"} and doc["layers"] and doc["layer"] == max(doc["layers"])
    assert all(0 <= v <= 1 for v in [*doc["flip_rate"].values(), doc["random_flip_rate"]])
    assert len(doc["patching"]) == 2 * smollm2.cfg.n_layers and len(doc["items"]) == 24
    u = load_file(str(out / "direction.safetensors"))
    assert set(u) >= {"direction", "diff_means", "random0"} and abs(float(u["direction"].norm()) - 1) < 1e-5
    assert "plotly" in (out / "knob.html").read_text()
    assert '"flip_rate"' in capsys.readouterr().out


def test_knob_bad_input(tiny):
    with pytest.raises(InterpError, match="test_share must be between 0 and 1, got 1.5"):
        knob(tiny, test_share=1.5)
    with pytest.raises(InterpError, match=r"layer 99 is out of range: valid layers are 0\.\.2"):
        knob(tiny, layer=99)
    with pytest.raises(InterpError, match="the fact table gives at most"):
        knob(tiny, n_items=10**6)
    with pytest.raises(InterpError, match="n_items must be at least 2, got 1"):
        knob(tiny, n_items=1)
    with pytest.raises(InterpError, match=r"threshold must lie in \(0, 1\]"):
        knob(tiny, threshold=1.5)
    with pytest.raises(InterpError, match="unknown pairing 'XY'; valid: CP, PC"):
        localise(tiny, None, "XY")  # type: ignore[arg-type]


# -- DAS on a planted knob ---------------------------------------------------------------------------
PRIOR_ANSWER, CONTEXT_ANSWER, CONTEXT_INTENT, PRIOR_INTENT = 5, 6, 10, 11


def planted_knob(n_items: int = 16, seed: int = 7):
    """A tiny Llama whose answer reads only ``w`` at layer 0's output, and two intents that differ
    along ``w`` there and, less, along other directions that nothing reads.

    The prompt's last token is the intent (token 10 or 11, their embeddings ``+-0.5 w`` along
    ``w``); layers 1 and 2 pass the residual through unchanged (zero attention and MLP outputs),
    the final norm has unit gain and the two answers' unembeddings are ``-+0.05 w``, so
    ``LD = 0.1 w.h / rms(h)``. Layer 0's attention (scaled up 10x) mixes in the item's random
    prefix and, since the last token differs, a second intent difference in directions other
    than ``w``: difference of means is pulled towards it, DAS should not be.
    """
    hf = build("llama")
    w = torch.randn(hf.config.hidden_size, generator=torch.Generator().manual_seed(seed))
    w /= w.norm()
    with torch.no_grad():
        for layer in hf.model.layers[1:]:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        hf.model.layers[0].self_attn.o_proj.weight.mul_(10.0)
        hf.model.norm.weight.fill_(1.0)
        hf.lm_head.weight[PRIOR_ANSWER], hf.lm_head.weight[CONTEXT_ANSWER] = -0.05 * w, 0.05 * w
        emb = hf.model.embed_tokens.weight
        for token, sign in ((CONTEXT_INTENT, 1.0), (PRIOR_INTENT, -1.0)):
            emb[token] += (sign * 0.5 - emb[token] @ w) * w
    model = Model(hf, NullTokenizer(), name="planted-knob")
    prefix = torch.randint(20, hf.config.vocab_size, (n_items, 7), generator=torch.Generator().manual_seed(1))
    data = IntentRuns.__new__(IntentRuns)  # IntentRuns of token ids instead of the text prompts
    data.items = list(range(n_items))  # type: ignore[assignment]
    choices = torch.tensor([[PRIOR_ANSWER, CONTEXT_ANSWER]] * n_items)  # (prior, context), as IntentRuns
    data.runs = {intent: LastTokenRuns(model, torch.cat([prefix, torch.full((n_items, 1), token)], 1), choices,
                                       batch_size=8)
                 for intent, token in (("prior", PRIOR_INTENT), ("context", CONTEXT_INTENT))}
    return model, data, w.double()


def test_knob_das_finds_the_planted_direction():
    """The knob's DAS (interchange at the last token of layer 0, trained on both pairings) finds
    the direction the answer reads (cos > 0.95, closer than difference of means), setting the
    projection to mid +- 2 half-gaps switches every answer, a random direction none; and the
    model's weights get no gradients."""
    model, data, w = planted_knob()
    base = {i: data.ld(i) for i in ("prior", "context")}
    assert (base["prior"] < 0).all() and (base["context"] > 0).all()  # the model follows the intents
    states = last_token_states(data, 0)
    u = train_das(model, data, 0, states, steps=40, progress=False)
    cos_das = float(abs(u @ w))
    dm = diff_of_means(torch.cat([states["context"], states["prior"]]).numpy(), np.r_[np.ones(16), np.zeros(16)])
    cos_dm = float(abs(dm @ w.numpy()))
    assert cos_das > 0.95 and cos_das > cos_dm + 0.03, (cos_das, cos_dm)
    u, mid, half = oriented(u, states)
    assert flip_rate(data, 0, u, mid, half, base) == 1.0
    for r in range(3):
        ur, mid_r, _ = oriented(_random_unit(model.cfg.d_model, 1 + r), states)
        assert flip_rate(data, 0, ur, mid_r, half, base) <= 0.1
    params = list(model.hf.parameters())
    assert all(p.grad is None for p in params) and all(p.requires_grad for p in params)


# -- knob.json -----------------------------------------------------------------------------------------
def test_knob_json_is_strict_json_with_null_for_nan(tmp_path):
    """Undefined numbers (no eligible prompts, no spread to correlate) are written as null, never
    as NaN/Infinity, which strict JSON parsers reject."""
    nan, inf = float("nan"), float("inf")
    items = knob_items(4)
    loc = Localisation("CP", [1], 0.9, [0.1, nan, 0.2], 1.0, [{"layers": [1], "recovery": nan}])
    sweep = [{"method": m, "k": k, "value": k, "context_share_prior": 0.5, "context_share_context": 0.5,
              "ld_prior": -inf if k < 0 else 0.0, "ld_context": nan} for m in ("das", "diff_means", "random") for k in (-2.0, 2.0)]
    u = [torch.nn.functional.normalize(torch.randn(8), dim=0) for _ in range(3)]
    result = KnobResult("tiny", {"site": "blocks.1.hook_resid_post", "threshold": np.float64(0.8)},
                        {"prior": 1.0, "context": np.float32(0.5)}, {"CP": loc, "PC": loc}, [1], 1,
                        {"das": u[0], "diff_means": u[1], "random0": u[2]}, {"das": nan, "diff_means": 0.5}, [nan, 0.0],
                        {"das": nan, "diff_means": 0.3}, sweep, 2, items)
    write_report(result, tmp_path / "knob")
    text = (tmp_path / "knob" / "knob.json").read_text()

    def reject(constant):
        raise AssertionError(f"knob.json holds {constant}, which is not JSON")

    doc = json.loads(text, parse_constant=reject)
    assert doc["flip_rate"] == {"das": None, "diff_means": 0.5} and doc["random_flip_rate"] is None
    assert doc["random_flip_rates"] == [None, 0.0] and doc["correlation"] is None
    assert doc["correlations"] == {"das": None, "diff_means": 0.3}
    assert doc["localisation"]["CP"]["single_layer"] == [0.1, None, 0.2] and doc["patching"][1]["effect"] is None
    assert doc["sweep"][0]["ld_prior"] is None and doc["sweep"][0]["ld_context"] is None
    assert doc["accuracy"] == {"prior": 1.0, "context": 0.5} and doc["settings"]["threshold"] == 0.8
    assert "NaN" not in (tmp_path / "knob" / "knob.html").read_text().split("<h2>Settings")[1]
    assert finite({"a": (np.float32("nan"), np.array([1.0, -inf]))}) == {"a": [None, [1.0, None]]}
