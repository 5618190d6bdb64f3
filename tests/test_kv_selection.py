"""Choosing kv heads by their masking effect and by DuoAttention's gates, on tiny models.

The gated attention is checked against its two ends: gates at 1 compute the model's own
attention, gates at 0 what ``compressed`` computes with every kv head streaming.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tiny_models import NullTokenizer, build

from interp import Model
from interp.errors import BadInputError
from interp.heads.compression import compressed
from interp.heads.kv_selection import _gated, keep_top, masking_effect, train_gates

pytestmark = pytest.mark.usefixtures("one_thread")
SINK, WINDOW = 2, 5


def _tiny(family: str = "llama") -> Model:
    return Model(build(family), NullTokenizer(), name=f"tiny-{family}")


def _examples(n: int = 3, length: int = 20, seed: int = 0) -> list[tuple[list[int], list[int]]]:
    g = np.random.default_rng(seed)
    return [(g.integers(1, 50, length).tolist(), g.integers(1, 50, 3).tolist()) for _ in range(n)]


def test_keep_top_takes_the_highest_share_and_skips_nan():
    values = np.array([[0.1, 0.9], [np.nan, 0.5], [0.3, np.nan]])
    assert keep_top(values, 0.5).tolist() == [[False, True], [False, True], [False, False]]
    assert not keep_top(values, 0.0).any() and keep_top(values, 1.0).sum() == 4
    with pytest.raises(BadInputError, match="layers, kv_heads"):
        keep_top(np.zeros(3), 0.5)


@pytest.mark.parametrize("family", ["llama", "gemma3"])
@pytest.mark.parametrize("gate", [1.0, 0.0])
def test_gated_attention_at_its_ends(family, gate):
    """gates 1: the model's own logits; gates 0: every kv head streams, as under compressed."""
    model = _tiny(family)
    ids = torch.tensor([_examples(1, 24)[0][0]])
    with torch.no_grad():
        if gate:
            ref = model.hf(input_ids=ids).logits
        else:
            with compressed(model, np.zeros((model.cfg.n_layers, model.cfg.n_kv_heads), dtype=bool),
                            sink=SINK, window=WINDOW):
                ref = model.hf(input_ids=ids).logits
        before = model.hf.config._attn_implementation
        with _gated(model, torch.full((model.cfg.n_layers, model.cfg.n_kv_heads), gate), SINK, WINDOW):
            got = model.hf(input_ids=ids).logits
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)
    assert model.hf.config._attn_implementation == before  # the model's implementation is back


def test_gated_block_restores_the_model_on_error():
    model = _tiny()
    grads = [p.requires_grad for p in model.hf.parameters()]
    with pytest.raises(RuntimeError, match="boom"):
        with _gated(model, torch.ones(model.cfg.n_layers, model.cfg.n_kv_heads), SINK, WINDOW):
            raise RuntimeError("boom")
    assert [p.requires_grad for p in model.hf.parameters()] == grads
    assert model.hf.config._attn_implementation.startswith("interp_")
    assert not any("_interp_kv_gate" in model.attn_module(la).__dict__ for la in range(model.cfg.n_layers))


def test_masking_effect_is_zero_where_streaming_drops_nothing_and_not_elsewhere():
    model = _tiny("gemma3")  # sliding-window layers: NaN
    examples = _examples(2, 20)
    effect = masking_effect(model, examples, sink=SINK, window=WINDOW, progress_bar=False)
    bounded = [la for la in range(model.cfg.n_layers) if model.sliding_window(la) is not None]
    assert np.isnan(effect[bounded]).all() and not np.isnan(np.delete(effect, bounded, 0)).any()
    assert np.abs(np.nan_to_num(effect)).max() > 1e-4  # streaming one head changes the answers' log-probabilities
    # a window that holds every key drops nothing: refused rather than returning zeros
    with pytest.raises(BadInputError, match="keep every key"):
        masking_effect(model, examples, sink=SINK, window=64, progress_bar=False)


def test_masking_effect_matches_one_compressed_run_by_hand():
    model = _tiny()
    examples = _examples(1, 20)
    effect = masking_effect(model, examples, sink=SINK, window=WINDOW, progress_bar=False)
    prompt, answer = examples[0]
    ids = torch.tensor([prompt + answer])

    def logprob() -> float:
        with torch.no_grad():
            lp = torch.log_softmax(model.hf(input_ids=ids).logits[0].double(), -1)
        return float(np.mean([lp[len(prompt) - 1 + i, a].item() for i, a in enumerate(answer)]))

    keep = np.ones((model.cfg.n_layers, model.cfg.n_kv_heads), dtype=bool)
    keep[1, 0] = False
    base = logprob()
    with compressed(model, keep, sink=SINK, window=WINDOW):
        streamed = logprob()
    assert effect[1, 0] == pytest.approx(base - streamed, abs=1e-4)


def test_train_gates_lowers_gates_under_l1_and_keeps_them_in_range():
    model = _tiny("gemma3")
    params = [p.detach().clone() for p in model.hf.parameters()]
    examples = _examples(2, 20)
    loose = train_gates(model, steps=6, lr=0.1, l1=0.0, sink=SINK, window=WINDOW, examples=examples,
                        progress_bar=False)
    tight = train_gates(model, steps=6, lr=0.1, l1=5.0, sink=SINK, window=WINDOW, examples=examples,
                        progress_bar=False)
    free = ~np.isnan(loose)
    assert (np.isnan(loose) == np.isnan(tight)).all() and free.any() and not free.all()  # sliding layers: NaN
    assert ((tight[free] >= 0) & (tight[free] <= 1)).all() and ((loose[free] >= 0) & (loose[free] <= 1)).all()
    assert tight[free].mean() < loose[free].mean() - 0.2  # the L1 penalty pushes the gates down
    assert all(torch.equal(a, b) for a, b in zip(params, model.hf.parameters(), strict=True))  # the model is frozen


def test_bad_arguments_are_refused_before_any_forward():
    model = _tiny()
    with pytest.raises(BadInputError, match="empty"):
        train_gates(model, examples=[], progress_bar=False)
    with pytest.raises(BadInputError, match="pair"):
        masking_effect(model, [("not", "ids")], progress_bar=False)
    with pytest.raises(BadInputError, match="at least one"):
        masking_effect(model, [], progress_bar=False)
