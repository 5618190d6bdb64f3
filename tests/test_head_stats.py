"""Kernel statistics inside the forward pass agree with eager attention on every family."""

from __future__ import annotations

import pytest
import torch
from test_kernels.reference import target_mask
from tiny_models import VOCAB, padded_batch

from interp.core.attention import observers_of
from interp.core.masks import position_kwargs
from interp.heads.kernel_stats import head_stats


def repeated(seed=0, n=15):
    g = torch.Generator().manual_seed(seed)
    r = torch.randint(1, VOCAB, (1, n), generator=g)
    return torch.cat([r, r, r[:, :5]], dim=1)


@pytest.mark.parametrize("padded", [False, True])
def test_matches_eager_patterns(tiny, padded):
    batch = padded_batch(lengths=(26, 19)) if padded else {"input_ids": repeated(), "attention_mask": torch.ones(1, 35, dtype=torch.long)}
    ids = batch["input_ids"]
    rules = ["prev", "dup", "ngram1", "ngram2", "bos", "self"]
    stats = head_stats(tiny, batch, rules=rules, row_stats=True, topk=2)
    tiny.hf.set_attn_implementation("interp_eager")
    with torch.no_grad():
        eager = tiny.hf(**batch, **position_kwargs(batch["attention_mask"]), output_attentions=True).attentions
    tiny.hf.set_attn_implementation("interp_sdpa")
    mask = batch["attention_mask"]
    for layer, s in stats.items():
        a = eager[layer].double()
        for bi in range(ids.shape[0]):
            for i in range(ids.shape[1]):
                if not mask[bi, i]:
                    continue
                for rule in rules:
                    tm = target_mask(rule, ids, bi, i, ids.shape[1], mask)
                    expected = a[bi, :, i][:, tm].sum(-1)
                    assert torch.allclose(s.mass[rule][bi, :, i].double(), expected, atol=1e-5), (layer, rule, i)
                assert torch.equal(s.argmax[bi, :, i], a[bi, :, i].argmax(-1))


def test_fused_path_keeps_logits_and_stops_early(tiny):
    """Observing attention swaps SDPA for its fused CPU kernel that also returns the log-sum-exp:
    the model's logits stay bit-identical, every layer where the kernel applies hands its
    log-sum-exp over. ``head_stats(layers=[0])`` runs the forward only as far as layer 0's
    attention: no later block, no final norm, no unembedding."""
    ids = repeated()
    n = ids.shape[1]
    with torch.no_grad():
        expected = tiny.hf(ids).logits
    seen = []

    def observe(layer, q, k, spec, lse):
        fusable = spec.softcap is None and (spec.sliding_window is None or spec.sliding_window >= n)
        seen.append((layer, fusable, lse is not None))

    with tiny.trace(ids, observe=observe) as tr:
        pass
    assert torch.equal(tr.logits, expected)
    assert [layer for layer, _, _ in seen] == list(range(tiny.cfg.n_layers))
    assert all(fused == fusable for _, fusable, fused in seen), seen  # the fused kernel wherever it computes the same
    ran = []
    blocks = [*tiny.blocks, tiny.hf.get_output_embeddings()]
    hooks = [m.register_forward_hook(lambda module, args, out, i=i: ran.append(i)) for i, m in enumerate(blocks)]
    try:
        stats = head_stats(tiny, ids, layers=[0])
    finally:
        for h in hooks:
            h.remove()
    assert list(stats) == [0] and ran == [], ran  # layer 0 stopped inside its attention: no block finished
    assert all(not observers_of(m) for m in tiny.hf.modules() if hasattr(m, "_interp_observers"))
    with torch.no_grad():
        assert torch.equal(tiny.hf(ids).logits, expected)


def test_rows_subset(tiny):
    ids = repeated(n=12)
    rows = torch.arange(12, 24)  # the second copy
    full = head_stats(tiny, ids, rules=["ngram1"])
    some = head_stats(tiny, ids, rules=["ngram1"], rows=rows)
    for layer in full:
        torch.testing.assert_close(some[layer].mass["ngram1"], full[layer].mass["ngram1"][:, :, rows], atol=1e-6, rtol=0)


def test_observed_forward_is_bit_identical(tiny):
    """With observers the fused kernel computes attention; the logits must not change."""
    ids = repeated()
    with torch.no_grad():
        expected = tiny.hf(ids).logits
    seen = []
    modules = [m for m in tiny.hf.modules() if hasattr(m, "_interp_observers")]
    for m in modules:
        observers_of(m).append(lambda layer, q, k, spec, lse: seen.append(lse is not None))
    try:
        with torch.no_grad():
            got = tiny.hf(ids).logits
    finally:
        for m in modules:
            observers_of(m).clear()
    assert torch.equal(got, expected)
    assert len(seen) == tiny.cfg.n_layers
    if tiny.cfg.model_type in ("llama", "qwen2", "qwen3", "gpt_neox"):
        assert all(seen), "the fused kernel should hand over the log-sum-exp on plain causal layers"
