"""Head-wise KV-cache compression against a dense float64 reference that drops the keys.

For every layer, head and query of the real (tiny) model run under ``compressed``, the attention
output ``hook_z`` must equal attention computed in float64 over an explicit list of keys: for a
streaming kv head's query heads only the first ``sink`` real keys and the last ``window`` keys,
for every other head all visible keys. Prefill and decoding steps, padded batches, GQA and MQA.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tiny_models import build, padded_batch

from interp import Model
from interp.core.kv_cache import run_cached
from interp.errors import BadInputError
from interp.heads.compression import compressed, sliding_windows

pytestmark = pytest.mark.usefixtures("one_thread")
SINK, WINDOW = 2, 5


def _tiny(family: str) -> Model:
    from tiny_models import NullTokenizer

    return Model(build(family), NullTokenizer(), name=f"tiny-{family}")


def _keep(model: Model) -> np.ndarray:
    """Every other kv head streams (at least one per unbounded layer, one kept where there are two)."""
    keep = np.zeros((model.cfg.n_layers, model.cfg.n_kv_heads), dtype=bool)
    keep[:, 1::2] = True
    return keep


def _reference_z(q, k, v, spec, first, stream, n_new):
    """Attention of each query over an explicit key list, float64; ``q`` [b, pos_q, H, d],
    ``k``/``v`` [b, pos_k, Hkv, d]; ``first[b]``: the row's first real key; ``stream[h]``."""
    q, k, v = q.double(), k.double(), v.double()
    b, n_q, heads, _ = q.shape
    n_k = k.shape[1]
    group = heads // k.shape[2]
    out = torch.full_like(q, float("nan"))
    for row in range(b):
        for i in range(n_q - n_new, n_q):
            pos = n_k - n_q + i
            if pos < first[row]:
                continue  # a padding query: its output is unused
            keys = [j for j in range(first[row], pos + 1)
                    if spec.sliding_window is None or pos - j < spec.sliding_window]
            for h in range(heads):
                kept = keys
                if stream[h]:
                    kept = [j for j in keys if j < first[row] + SINK or pos - j < WINDOW]
                idx = torch.tensor(kept)
                s = (k[row, idx, h // group] @ q[row, i, h]) * spec.scaling
                if spec.softcap is not None:
                    s = torch.tanh(s / spec.softcap) * spec.softcap
                out[row, i, h] = torch.softmax(s, 0) @ v[row, idx, h // group]
    return out


def _check_layers(model, tr, first, keep, steps=1):
    group = model.cfg.n_heads // model.cfg.n_kv_heads
    bounded = sliding_windows(model)
    checked = 0
    for layer in range(model.cfg.n_layers):
        stream = [False] * model.cfg.n_heads if layer in bounded else \
            list(np.repeat(~keep[layer], group))
        for step in range(steps):
            q, k, v, z = (tr.steps(f"blocks.{layer}.attn.hook_{x}")[step] for x in "qkvz")
            ref = _reference_z(q, k, v, tr.specs[layer], first, stream, q.shape[1])
            real = ~torch.isnan(ref)
            torch.testing.assert_close(z.double()[real], ref[real], atol=2e-5, rtol=1e-4)
            checked += int(real.sum())
    assert checked > 0


@pytest.mark.parametrize("family", ["llama", "qwen3", "gemma3", "gpt2"])
def test_compressed_prefill_and_decoding_drop_exactly_the_streaming_keys(family):
    """GQA (llama, qwen3: 2 query heads per kv head), MQA (gemma3: one kv head, sliding layers
    left alone), MHA with absolute positions (gpt2); a left-padded batch, then two decoding steps."""
    model = _tiny(family)
    keep = _keep(model)
    batch = padded_batch(lengths=(24, 17))
    first = (1 - batch["attention_mask"]).sum(1).tolist()
    sites = [f"blocks.*.attn.hook_{x}" for x in "qkvz"]
    with compressed(model, keep, sink=SINK, window=WINDOW) as comp, model.trace(sites=sites) as tr, torch.no_grad():
        out, cache = run_cached(model.hf, None, **batch)
        mask = batch["attention_mask"]
        nxt = out.logits[:, -1].argmax(-1, keepdim=True)
        for _ in range(2):
            mask = torch.cat([mask, mask.new_ones(2, 1)], 1)
            out, cache = run_cached(model.hf, cache, input_ids=nxt, attention_mask=mask)
            nxt = out.logits[:, -1].argmax(-1, keepdim=True)
    _check_layers(model, tr, first, keep, steps=3)
    assert comp.keys_seen == 26
    # the streaming heads really lost keys: the same run uncompressed differs
    with model.trace(batch, sites="blocks.*.attn.hook_z") as plain:
        pass
    edited = [la for la in range(model.cfg.n_layers) if la not in sliding_windows(model)]
    assert any(not torch.allclose(plain[f"blocks.{la}.attn.hook_z"], tr.steps(f"blocks.{la}.attn.hook_z")[0][:, :24],
                                  atol=1e-4) for la in edited)


def test_compressed_padded_row_matches_the_prompt_alone():
    """Sinks are a row's first real tokens: a left-padded row decodes as the prompt run alone."""
    model = _tiny("llama")
    keep = _keep(model)
    batch = padded_batch(lengths=(24, 17))
    alone = batch["input_ids"][1:, 7:]
    with compressed(model, keep, sink=SINK, window=WINDOW), torch.no_grad():
        both = model.hf(**batch).logits[1, -1]
        single = model.hf(input_ids=alone).logits[0, -1]
    torch.testing.assert_close(both, single, atol=1e-4, rtol=1e-4)


def test_keeping_every_head_changes_nothing_and_the_hooks_go():
    model = _tiny("qwen3")
    batch = padded_batch()
    with model.trace(batch) as plain:
        pass
    full = np.ones((model.cfg.n_layers, model.cfg.n_kv_heads), dtype=bool)
    with compressed(model, full, sink=SINK, window=WINDOW) as comp, model.trace(batch) as tr:
        pass
    assert torch.equal(tr.logits, plain.logits)
    assert comp.kept_fraction(24) == 1.0
    with compressed(model, ~full, sink=SINK, window=WINDOW), model.trace(batch) as squeezed:
        pass
    assert not torch.allclose(squeezed.logits, plain.logits, atol=1e-3)
    attn = [model.module(f"{model.adapter.layers}.{la}.{model.adapter.attn}") for la in range(3)]
    assert all(not m._interp_mask_edits for m in attn)


def test_kept_fraction_counts_sliding_layers_as_bounded():
    model = _tiny("gemma3")  # layers 0, 1 slide with a window of 6; layer 2 is global, one kv head
    assert sliding_windows(model) == {0: 6, 1: 6}
    none = np.zeros((3, 1), dtype=bool)
    with compressed(model, none, sink=SINK, window=WINDOW) as comp:
        pass
    # 40 tokens: the sliding layers keep 6 keys each, the streaming global layer 2 + 5
    assert comp.kept_fraction(40) == pytest.approx((6 + 6 + 7) / 120)
    assert comp.streaming_heads == 1


def test_compressed_bad_input():
    model = _tiny("llama")
    with pytest.raises(BadInputError, match=r"shape \(3, 2\)"):
        with compressed(model, np.ones((3, 4), dtype=bool)):
            pass
    with pytest.raises(BadInputError, match="bool array"):
        with compressed(model, np.ones((3, 2))):
            pass
    with pytest.raises(BadInputError, match="window must be an integer of at least 1"):
        with compressed(model, _keep(model), window=0):
            pass
    with pytest.raises(BadInputError, match="sink must be"):
        with compressed(model, _keep(model), sink=-1):
            pass
    short = torch.randint(1, 100, (1, 6))
    with pytest.raises(BadInputError, match="keep all 6 keys"):
        with compressed(model, _keep(model), sink=2, window=4), torch.no_grad():
            model.hf(input_ids=short)
    with pytest.raises(BadInputError, match="kept_fraction|no forward ran"):
        with compressed(model, _keep(model)) as comp:
            comp.kept_fraction()


# -- the streaming score ------------------------------------------------------------------------

def test_streaming_score_is_one_on_sink_and_window_heads_and_near_zero_far_back():
    from wired_models import CharTokenizer, wired_streaming_gpt2

    from interp.heads.head_scan import scan

    model = Model(wired_streaming_gpt2(), CharTokenizer(), name="wired")
    scores = scan(model, ["streaming"], streaming={"sink": 1, "window": 4, "tokens": 32}, causal_checks=False,
                  progress=False).matrix("streaming")
    assert scores[0, 0] > 0.999  # previous token: inside the window
    assert scores[0, 1] > 0.999  # BOS: the sink
    assert scores[1, 0] < 0.001  # position 1: neither sink nor recent for rows 5..31
    # position 2 is still recent for row 5 (5 - 2 < 4), one of the 27 rows scored
    assert scores[1, 1] == pytest.approx(1 / 27, abs=1e-3)


@pytest.mark.parametrize("family", ["llama", "gemma3"])
def test_streaming_score_matches_dense_float64_attention(family):
    """The score (two kernel spans per row) against eager float64 probabilities summed by hand."""
    from tiny_models import build
    from wired_models import CharTokenizer

    from interp.heads.head_scan import scan
    from interp.heads.sequences import natural_text

    sink, window, tokens = 3, 6, 40
    model = Model(build(family), CharTokenizer(), name=f"tiny-{family}")
    got = scan(model, ["streaming"], streaming={"sink": sink, "window": window, "tokens": tokens, "samples": 2},
               causal_checks=False, progress=False).matrix("streaming")
    body = natural_text(model, tokens - 1, 2, 0)
    ids = torch.cat([torch.zeros(2, 1, dtype=torch.long), body], 1)  # CharTokenizer's BOS is 0
    dense = build(family, attn="eager").double()
    with torch.no_grad():
        probs = dense(input_ids=ids, output_attentions=True).attentions  # per layer [b, H, q, k]
    for layer, p in enumerate(probs):
        rows = range(sink + window, tokens)
        kept = [p[:, :, i, :sink].sum(-1) + p[:, :, i, i - window + 1 : i + 1].sum(-1) for i in rows]
        want = torch.stack(kept, -1).mean(dim=(0, 2)).numpy()
        np.testing.assert_allclose(got[layer], want, atol=2e-5)


def test_streaming_settings_are_checked_before_any_work():
    from interp.heads.head_scan import SettingError, plan_scan

    model = _tiny("llama")
    with pytest.raises(SettingError, match="cover every key"):
        plan_scan(model, ["streaming"], streaming={"sink": 4, "window": 256, "tokens": 200})
    with pytest.raises(Exception, match="unknown streaming setting"):
        plan_scan(model, ["streaming"], streaming={"windw": 3})


# -- kv patterns --------------------------------------------------------------------------------

def _table(model, values: np.ndarray, score: str = "retrieval"):
    from interp.heads.table import HeadScores

    return HeadScores.from_arrays({score: values}, model=model.name)


def test_kv_pattern_takes_the_group_max_or_min_and_marks_sliding_layers():
    llama = _tiny("llama")  # 4 query heads, 2 kv heads: groups (0, 1) and (2, 3)
    values = np.array([[0.1, 0.9, 0.2, 0.3], [0.5, 0.4, 0.0, 0.0], [0.7, 0.6, 0.8, 0.1]])
    table = _table(llama, values)
    np.testing.assert_allclose(table.kv_pattern("retrieval", model=llama).to_numpy(),
                               [[0.9, 0.3], [0.5, 0.0], [0.7, 0.8]])
    np.testing.assert_allclose(table.kv_pattern("retrieval", model=llama, lowest=True).to_numpy(),
                               [[0.1, 0.2], [0.4, 0.0], [0.6, 0.1]])
    keep = table.keep_full("retrieval", 0.5, model=llama)  # 3 of 6 kv heads: 0.9, 0.8, 0.7
    assert keep.tolist() == [[True, False], [False, False], [True, True]]
    assert table.keep_full("retrieval", 0.0, model=llama).sum() == 0
    gemma = _tiny("gemma3")  # MQA; layers 0 and 1 slide
    pattern = _table(gemma, values).kv_pattern("retrieval", model=gemma)
    assert pattern.shape == (3, 1) and pattern.iloc[:2].isna().all().all() and pattern.iloc[2, 0] == 0.8
    assert _table(gemma, values).keep_full("retrieval", 1.0, model=gemma).tolist() == [[False], [False], [True]]


def test_kv_pattern_bad_input():
    from interp.errors import UnknownNameError

    llama = _tiny("llama")
    table = _table(llama, np.zeros((3, 4)))
    for share in (-0.1, 1.5, "half", True):
        with pytest.raises(BadInputError, match="share must be a number in 0..1"):
            table.keep_full("retrieval", share, model=llama)
    with pytest.raises(UnknownNameError, match="unknown score .retrieval.; valid scores: induction"):
        _table(llama, np.zeros((3, 4)), score="induction").keep_full("retrieval", 0.5, model=llama)
    with pytest.raises(BadInputError, match="pass model="):
        table.kv_pattern("retrieval")
    with pytest.raises(BadInputError, match="scores are for 2 x 4"):
        _table(llama, np.zeros((2, 4))).kv_pattern("retrieval", model=llama)


def test_kv_pattern_file_with_one_kv_head_per_layer_keeps_its_shape(tmp_path):
    from interp.heads.kv_export import read_kv_pattern, write_kv_pattern

    gemma = _tiny("gemma3")
    table = _table(gemma, np.array([[0.1, 0.2, 0.3, 0.4], [0.5, 0.6, 0.7, 0.8], [0.9, 0.2, 0.3, 0.4]]))
    write_kv_pattern(table, tmp_path / "kv", model=gemma)
    sink, recent, values = read_kv_pattern(tmp_path / "kv")
    assert (sink, recent) == (4, 256) and values.shape == (3, 1)
    assert values[:, 0].tolist() == [1.0, 1.0, 0.9]  # sliding layers: 1, no compression beyond their window
