"""``decode_argmax`` (a decoding step's arg-max key per head) against the general kernel's arg-max
and a dense float64 reference; and the retrieval decoder's arg-max keys, as absolute positions,
against a full forward of the decoded sequence (sliding-window caches included)."""

from __future__ import annotations

import pytest
import torch
from tiny_models import NullTokenizer, build

from interp.kernels import attention_stats, decode_argmax

from .reference import dense_probs

CASES = [  # (heads, kv heads, window, softcap)
    (4, 4, None, None), (4, 2, None, None), (8, 1, None, None), (4, 2, 5, None), (4, 1, 6, 3.0), (6, 3, None, 2.0),
]


@pytest.mark.parametrize("h,hkv,window,softcap", CASES)
def test_matches_attention_stats_argmax(h, hkv, window, softcap):
    g = torch.Generator().manual_seed(h * 100 + hkv * 10 + (window or 0))
    b, n, d = 3, 17, 16
    q = torch.randn(b, h, 1, d, generator=g)
    k = torch.randn(b, hkv, n, d, generator=g)
    key_mask = torch.ones(b, n, dtype=torch.bool)
    key_mask[1, :4] = False  # a left-padded item
    key_mask[2, :9] = False
    fast = decode_argmax(q, k, scaling=d**-0.5, sliding_window=window, softcap=softcap, key_mask=key_mask)
    ref = attention_stats(q, k, scaling=d**-0.5, sliding_window=window, softcap=softcap, key_mask=key_mask,
                          row_stats=True, backend="torch").argmax[:, :, 0]
    assert torch.equal(fast, ref)
    probs, _ = dense_probs(q, k, scaling=d**-0.5, key_mask=key_mask, sliding_window=window, softcap=softcap)
    assert torch.equal(fast, probs[:, :, 0].argmax(-1))


class _Tokenizer(NullTokenizer):
    eos_token_id = None

    def decode(self, ids, **kwargs):
        return " ".join(str(int(t)) for t in ids)


@pytest.mark.parametrize("family", ["llama", "mistral", "gemma3", "gpt2"])
def test_retrieval_decoder_reads_absolute_positions(family):
    """Every decoding step's arg-max keys equal a dense recomputation on the full sequence, also
    where a sliding-window cache holds only the window (mistral: 7, gemma3: 6, prompt of 20)."""
    import interp
    from interp.heads.retrieval import NeedleTest, decode_with_argmax

    model = interp.Model(build(family, seed=3), _Tokenizer(), name=family)
    prompt = torch.randint(1, 128, (1, 20), generator=torch.Generator().manual_seed(1))
    test = NeedleTest(prompt, (2, 5), "x", 20, 0.0, 0)
    (generated,), (steps,) = decode_with_argmax(model, [test], 6)
    assert len(steps) == len(generated) == 6
    _check_against_dense(model, prompt, generated, steps, family)


def _check_against_dense(model, prompt, generated, steps, what):
    full = torch.cat([prompt, torch.tensor([generated], dtype=prompt.dtype)], dim=1)
    with model.trace(full, sites="blocks.*.attn.hook_[qk]") as tr:
        pass
    for layer in range(model.cfg.n_layers):
        spec = tr.specs[layer]
        q = tr[f"blocks.{layer}.attn.hook_q"].transpose(1, 2)  # [1, H, pos, d]
        k = tr[f"blocks.{layer}.attn.hook_k"].transpose(1, 2)
        probs, _ = dense_probs(q, k, scaling=spec.scaling, sliding_window=spec.sliding_window, softcap=spec.softcap)
        for i, step in enumerate(steps):
            row = prompt.shape[1] - 1 + i  # the query position of decoding step i
            assert torch.equal(step[layer], probs[0, :, row].argmax(-1)), (what, layer, i)


@pytest.mark.parametrize("family", ["llama", "mistral", "gemma3", "gpt2"])
def test_needle_tests_decoded_together_equal_each_alone(family):
    """Needle tests of one length decode as rows of one left-padded batch: every row generates what
    it generates alone, and its arg-max keys (absolute positions in its own prompt, padding never
    chosen) equal a dense recomputation on its own sequence, sliding windows included."""
    import interp
    from interp.heads.retrieval import NeedleTest, decode_with_argmax, prefill

    model = interp.Model(build(family, seed=3), _Tokenizer(), name=family)
    g = torch.Generator().manual_seed(2)
    prompts = [torch.randint(1, 128, (1, n), generator=g) for n in (20, 14, 17)]
    tests = [NeedleTest(p, (2, 5), "x", 20, 0.0, 0) for p in prompts]
    start = prefill(model, [t.prompt_ids for t in tests])
    assert start.pads.tolist() == [0, 6, 3]
    generated, steps = decode_with_argmax(model, tests, 6, start)
    for p, test, tokens, row_steps in zip(prompts, tests, generated, steps, strict=True):
        (alone,), (alone_steps,) = decode_with_argmax(model, [test], 6)
        assert tokens == alone and len(row_steps) == len(tokens) == 6
        assert all(torch.equal(a, b) for a, b in zip(row_steps, alone_steps, strict=True))
        _check_against_dense(model, p, tokens, row_steps, family)
