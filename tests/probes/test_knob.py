"""The context knob: last-token runs, the layer search, and the analysis end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from interp.cli import main
from interp.errors import InterpError
from interp.probes.knob import IntentRuns, knob, localise, search_layers
from interp.probes.knob_task import knob_items
from interp.probes.last_token import LastTokenRuns
from interp.probes.steering import steer


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
    with pytest.raises(InterpError, match="test_share"):
        knob(tiny, test_share=1.5)
    with pytest.raises(InterpError):
        knob(tiny, layer=99)
