"""The head-wise KV cache against ``compressed`` (which drops the same keys through the mask).

Same generated tokens and ``hook_z`` to 1e-5 for every adapter family on tiny models: a
left-padded batch, prefill whole and in chunks (a chunk of only padding included), several
decoding steps, sliding-window layers (Gemma 3, Mistral); then the memory it holds, plain
``generate``, and the pattern readers on hand-made files.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from tiny_models import CONFIGS, NullTokenizer, build, padded_batch

from interp import Model
from interp.core.headwise import HeadwiseCache, HeadwiseLayer
from interp.core.kv_cache import cache_keyword, run_cached
from interp.errors import BadInputError, UsageError
from interp.heads.compression import compressed
from interp.heads.headwise import full_cache_bytes, headwise_cache, read_pattern

pytestmark = pytest.mark.usefixtures("one_thread")
SINK, WINDOW, STEPS = 2, 5, 4


def _tiny(family: str, attn: str = "sdpa") -> Model:
    return Model(build(family, attn=attn), NullTokenizer(), name=f"tiny-{family}")


def _keep(model: Model) -> np.ndarray:
    keep = np.zeros((model.cfg.n_layers, model.cfg.n_kv_heads), dtype=bool)
    keep[:, 1::2] = True
    return keep


def _run(model: Model, batch: dict, cache, chunk: int):
    """Prefill in chunks of ``chunk`` then ``STEPS`` greedy steps; tokens and every layer's hook_z."""
    ids, mask = batch["input_ids"], batch["attention_mask"]
    with model.trace(sites="blocks.*.attn.hook_z") as tr, torch.no_grad():
        for s in range(0, ids.shape[1], chunk):
            out, cache = run_cached(model.hf, cache, input_ids=ids[:, s:s + chunk], attention_mask=mask[:, :s + chunk])
        nxt = out.logits[:, -1].argmax(-1, keepdim=True)
        tokens = [nxt]
        for _ in range(STEPS):
            mask = torch.cat([mask, mask.new_ones(len(ids), 1)], 1)
            out, cache = run_cached(model.hf, cache, input_ids=nxt, attention_mask=mask)
            nxt = out.logits[:, -1].argmax(-1, keepdim=True)
            tokens.append(nxt)
    z = [torch.cat(tr.steps(f"blocks.{la}.attn.hook_z"), 1) for la in range(model.cfg.n_layers)]
    return torch.cat(tokens, 1), z, cache


@pytest.mark.parametrize("family", sorted(CONFIGS))
@pytest.mark.parametrize("chunk", [64, 5])
def test_headwise_cache_equals_compressed(family, chunk):
    """chunk 5: the shorter row's first chunk is all padding (no sinks yet) and chunks cross the
    sink range and the window."""
    model = _tiny(family)
    keep = _keep(model)
    batch = padded_batch(lengths=(24, 17))
    with compressed(model, keep, sink=SINK, window=WINDOW):
        ref_tokens, ref_z, _ = _run(model, batch, None, 64)
    tokens, z, cache = _run(model, batch, headwise_cache(model, keep, SINK, WINDOW), chunk)
    assert isinstance(cache, HeadwiseCache)
    assert torch.equal(tokens, ref_tokens)
    real = torch.cat([batch["attention_mask"], torch.ones(2, STEPS, dtype=torch.long)], 1).bool()
    for a, b in zip(z, ref_z, strict=True):
        torch.testing.assert_close(a[real], b[real], atol=1e-5, rtol=0)


@pytest.mark.parametrize("family", ["llama", "gemma3"])
def test_headwise_cache_equals_compressed_under_eager_attention(family):
    """The eager functions add the mask (Gemma's soft-caps the scores first)."""
    model = _tiny(family, attn="eager")
    keep = _keep(model)
    batch = padded_batch(lengths=(24, 17))
    with compressed(model, keep, sink=SINK, window=WINDOW):
        ref_tokens, ref_z, _ = _run(model, batch, None, 64)
    tokens, z, _ = _run(model, batch, headwise_cache(model, keep, SINK, WINDOW), 7)
    assert torch.equal(tokens, ref_tokens)
    real = torch.cat([batch["attention_mask"], torch.ones(2, STEPS, dtype=torch.long)], 1).bool()
    for a, b in zip(z, ref_z, strict=True):
        torch.testing.assert_close(a[real], b[real], atol=1e-5, rtol=0)


def test_plain_generate_with_chunked_prefill_matches_compressed_and_holds_less():
    model = _tiny("llama")
    keep = _keep(model)
    batch = padded_batch(lengths=(40, 33))
    kw = dict(max_new_tokens=6, do_sample=False, pad_token_id=0)
    with compressed(model, keep, sink=SINK, window=WINDOW), torch.no_grad():
        ref = model.hf.generate(**batch, **kw)
    cache = headwise_cache(model, keep, SINK, WINDOW)
    with torch.no_grad():
        # `cache=` in transformers 5.x (which warns on `past_key_values=`), `past_key_values=` before
        out = model.hf.generate(**batch, **{cache_keyword(model.hf): cache}, prefill_chunk_size=8, **kw)
    assert torch.equal(out, ref)
    n = out.shape[1] - 1  # the last token is never fed back
    assert cache.get_seq_length() == n
    # full heads hold every key, streaming heads sink + window - 1, whatever the length
    layer = cache.layers[0]
    assert isinstance(layer, HeadwiseLayer)
    assert layer.keys.shape[2] == n and layer.recent_keys.shape[2] == WINDOW - 1
    assert layer.sink_keys.shape[2] == SINK
    d, size = model.cfg.d_head, 4
    per_layer = 2 * 2 * d * size * (n + SINK + WINDOW - 1)  # batch 2, one full and one streaming kv head
    assert cache.nbytes() == model.cfg.n_layers * per_layer
    assert cache.nbytes() < full_cache_bytes(model, n, batch=2)
    # interp's generate takes the cache too
    again = {cache_keyword(model.hf): headwise_cache(model, keep, SINK, WINDOW)}
    assert model.generate(batch, max_new_tokens=6, **again) == \
        NullTokenizer().batch_decode(ref[:, batch["input_ids"].shape[1]:])


def test_interventions_and_refusals_inside_a_trace():
    """A q/k/v hook sees the new keys (what the cache stores) and may replace them; mask edits and
    recorders cannot run on a head-wise cache."""
    model = _tiny("llama")
    keep = _keep(model)
    ids = padded_batch(lengths=(20, 20))["input_ids"]
    with torch.no_grad(), model.trace(sites="blocks.0.attn.hook_k") as tr:
        run_cached(model.hf, headwise_cache(model, keep, SINK, WINDOW), input_ids=ids)
    assert tr["blocks.0.attn.hook_k"].shape[1] == 20
    zero = {"blocks.1.attn.hook_v": lambda v, site: v * 0}
    with torch.no_grad():
        with compressed(model, keep, sink=SINK, window=WINDOW), model.trace(interventions=zero):
            ref = model.hf(input_ids=ids).logits
        with model.trace(interventions=zero):
            out, _ = run_cached(model.hf, headwise_cache(model, keep, SINK, WINDOW), input_ids=ids)
    torch.testing.assert_close(out.logits, ref, atol=1e-5, rtol=0)
    with compressed(model, keep, sink=SINK, window=WINDOW), torch.no_grad(), pytest.raises(UsageError, match="mask edits"):
        run_cached(model.hf, headwise_cache(model, keep, SINK, WINDOW), input_ids=ids)


def test_bad_patterns_are_refused_before_any_forward(tmp_path):
    model = _tiny("llama")
    calls = []
    model.hf.register_forward_pre_hook(lambda *a: calls.append(1))
    with pytest.raises(BadInputError, match=r"shape \(3, 2\)"):
        headwise_cache(model, np.ones((3, 4), dtype=bool))
    with pytest.raises(BadInputError, match="shape"):
        headwise_cache(model, np.ones((3, 2)))  # floats, not bools
    (tmp_path / "duo").mkdir()
    (tmp_path / "duo" / "full_attention_heads.tsv").write_text("1\t0\t1\n" * 3)
    (tmp_path / "duo" / "config.json").write_text('{"sink_size": 64, "recent_size": 256}')
    with pytest.raises(BadInputError, match="3 rows x 3 columns.*3 layers x 2 kv heads"):
        read_pattern(tmp_path / "duo", model, share=0.5)
    (tmp_path / "rh.json").write_text(json.dumps({f"{la}-{h}": [0.1] for la in range(4) for h in range(4)}))
    with pytest.raises(BadInputError, match="head 3-0 but tiny-llama has 3 layers x 4 query heads"):
        read_pattern(tmp_path / "rh.json", model, share=0.5)
    (tmp_path / "part.json").write_text(json.dumps({"0-0": [0.1]}))
    with pytest.raises(BadInputError, match="no score for head 0-1"):
        read_pattern(tmp_path / "part.json", model, share=0.5)
    with pytest.raises(BadInputError, match="lacks config.json"):
        (tmp_path / "half").mkdir()
        (tmp_path / "half" / "full_attention_heads.tsv").write_text("1\t0\n" * 3)
        read_pattern(tmp_path / "half", model, share=0.5)
    (tmp_path / "half" / "config.json").write_text("{}")
    with pytest.raises(BadInputError, match="exactly one of share"):
        read_pattern(tmp_path / "half", model)
    assert calls == []


def test_pattern_readers_on_hand_made_files(tmp_path):
    model = _tiny("llama")  # 3 layers, 4 query heads in 2 kv groups
    # DuoAttention's layout: one row per layer, one gate value per kv head
    (tmp_path / "duo").mkdir()
    (tmp_path / "duo" / "full_attention_heads.tsv").write_text("0.9\t0.1\n0.2\t0.8\n0.05\t0.3\n")
    (tmp_path / "duo" / "config.json").write_text('{"sink_size": 64, "recent_size": 256}')
    keep, streaming = read_pattern(tmp_path / "duo", model, share=0.5)
    assert keep.tolist() == [[True, False], [False, True], [False, True]]
    assert streaming == {"sink": 64, "window": 256}
    keep, _ = read_pattern(tmp_path / "duo", model, threshold=0.5)
    assert keep.tolist() == [[True, False], [False, True], [False, False]]
    # Retrieval_Head / HeadKV: per query head, a list of scores (mean taken; a kv head takes its group's max)
    scores = {f"{la}-{h}": [0.0] for la in range(3) for h in range(4)}
    scores.update({"0-1": [0.5, 0.7], "2-3": [0.2], "1-0": []})
    (tmp_path / "rh.json").write_text(json.dumps(scores))
    keep, streaming = read_pattern(tmp_path / "rh.json", model, share=2 / 6)
    assert keep.tolist() == [[True, False], [False, False], [False, True]] and streaming == {}
    cache = headwise_cache(model, tmp_path / "duo", share=0.5)  # a pattern file straight in: its sink and window
    assert (cache.sink, cache.window) == (64, 256)
    assert isinstance(cache.layers[0], HeadwiseLayer) and cache.layers[0].full_kv.tolist() == [0]
    assert headwise_cache(model, tmp_path / "duo", 2, 5, share=0.5).window == 5
    with pytest.raises(BadInputError, match="already a choice"):
        headwise_cache(model, keep, share=0.5)


def test_interp_kv_pattern_export_reads_back(tmp_path):
    from interp.heads.kv_export import write_kv_pattern
    from interp.heads.table import HeadScores

    model = _tiny("gemma3")  # layers 0 and 1 slide: written as 1, never chosen
    rng = np.random.default_rng(0)
    scores = HeadScores.from_arrays({"retrieval": rng.random((3, 4))}, model=model.name, n_layers=3, n_heads=4,
                                    kv_heads=1, sliding_windows={0: 6, 1: 6})
    write_kv_pattern(scores, tmp_path / "p", model=model)
    keep, streaming = read_pattern(tmp_path / "p", model, share=1.0)
    assert keep.tolist() == [[False], [False], [True]]
    assert keep.tolist() == scores.keep_full("retrieval", 1.0, model=model).tolist()
    assert streaming == {"sink": 4, "window": 256}


def test_headwise_cache_needs_interp_attention():
    model = _tiny("llama")
    model.hf.config._attn_implementation = "sdpa"  # as if someone switched it back
    try:
        with pytest.raises(BadInputError, match="interp's attention function"):
            headwise_cache(model, _keep(model))
    finally:
        model.hf.config._attn_implementation = "interp_sdpa"


def test_cache_bytes_on_the_meta_device():
    """A long prompt's allocation, from the cache's own update and attend on the meta device
    (no memory, no model: the benchmark's Llama-3.1 rows)."""
    layer = HeadwiseLayer([True, False, False, False], group=2, sink=4, window=256)
    n = 32768
    k = torch.empty(1, 4, n, 128, device="meta", dtype=torch.bfloat16)
    q = torch.empty(1, 8, n, 128, device="meta", dtype=torch.bfloat16)
    key, value = layer.update(k, k.clone())
    layer.attend(lambda m, q, k, v, mask, **kw: (q.transpose(1, 2), None), False, torch.nn.Module(), q, key, value, None)
    assert layer.keys.shape == (1, 1, n, 128) and layer.recent_keys.shape == (1, 3, 255, 128)
    assert layer.nbytes() == 2 * 128 * 2 * (n + 3 * (4 + 255))
