"""Tracing on the real bundled models: parity with HF and with eager attention."""

from __future__ import annotations

import pytest
import torch

import interp
from interp.core.masks import position_kwargs
from interp.models.corpus import text

pytestmark = [pytest.mark.real_model, pytest.mark.slow]


def natural_batch(model, n_tokens: int):
    """Two left-padded natural-text prompts: ``n_tokens`` tokens and about half as many."""
    ids = model.tokenizer(text("alice"), return_tensors="pt")["input_ids"][0]
    assert len(ids) >= n_tokens, "the shipped text is too short for this test"
    long, short = ids[:n_tokens], ids[: n_tokens // 2]
    batch = torch.full((2, n_tokens), model.tokenizer.pad_token_id, dtype=torch.long)
    mask = torch.zeros(2, n_tokens, dtype=torch.long)
    batch[0], mask[0] = long, 1
    batch[1, -len(short) :], mask[1, -len(short) :] = short, 1
    return {"input_ids": batch, "attention_mask": mask}


def test_hooks_leave_logits_bit_identical(real_model):
    batch = natural_batch(real_model, 64)
    hf = real_model.hf
    hf.set_attn_implementation("sdpa")  # the model exactly as HF runs it
    try:
        with torch.no_grad():  # positions counted from the mask, as every forward of interp passes them
            expected = hf(**batch, **position_kwargs(batch["attention_mask"])).logits
    finally:
        hf.set_attn_implementation("interp_sdpa")
    with real_model.trace(batch, sites=real_model.site_names()) as tr:
        pass
    assert torch.equal(tr.logits, expected)


def test_attention_pattern_matches_eager_on_natural_text(real_model):
    # Gemma3's sliding window is 512: a longer prompt makes the window mask matter.
    n = 600 if real_model.cfg.model_type.startswith("gemma3") else 220
    batch = natural_batch(real_model, n)
    with real_model.trace(batch, sites="blocks.*.attn.hook_[qk]") as tr:
        pass
    hf = real_model.hf
    hf.set_attn_implementation("interp_eager")
    try:
        with torch.no_grad():
            eager = hf(**batch, **position_kwargs(batch["attention_mask"]), output_attentions=True).attentions
    finally:
        hf.set_attn_implementation("interp_sdpa")
    real = batch["attention_mask"].bool()
    worst = 0.0
    for layer in range(real_model.cfg.n_layers):
        diff = (interp.attention_pattern(tr, layer) - eager[layer]).abs().amax(dim=(1, 3))
        worst = max(worst, float(diff[real].max()))
    assert worst < 1e-5


def test_head_results_sum_to_attention_output(real_model):
    batch = natural_batch(real_model, 48)
    with real_model.trace(batch, sites=["blocks.*.attn.hook_result", "blocks.*.hook_attn_out"]) as tr:
        pass
    for layer in range(real_model.cfg.n_layers):
        summed = tr[f"blocks.{layer}.attn.hook_result"].sum(dim=2)
        torch.testing.assert_close(summed, tr[f"blocks.{layer}.hook_attn_out"], atol=2e-5, rtol=1e-4)


def test_known_behaviour_capital_of_france(smollm2):
    assert "Paris" in smollm2.generate("The capital of France is", max_new_tokens=4)[0]


def test_prompt_longer_than_context_is_refused(real_model):
    from interp.errors import PromptTooLongError

    with pytest.raises(PromptTooLongError, match=str(real_model.cfg.n_ctx)):
        real_model.run(torch.ones(1, real_model.cfg.n_ctx + 1, dtype=torch.long))


def test_needle_test_is_recalled_and_copied_by_some_head(smollm2):
    from interp.heads.retrieval import (
        build_test,
        copy_scores,
        decode_with_argmax,
        default_needles,
        rouge1_recall,
    )

    needle = default_needles()[2]
    test = build_test(smollm2, needle, 400, 0.5)
    assert smollm2.tokenizer.decode(test.prompt_ids[0, test.span[0] : test.span[1]]).strip() == needle["answer"]
    (generated,), (steps,) = decode_with_argmax(smollm2, [test], 16)
    assert rouge1_recall(needle["answer"], smollm2.tokenizer.decode(generated)) > 0.5
    scores = copy_scores(test.prompt_ids, test.span, generated, steps)
    assert scores.shape == (smollm2.cfg.n_layers, smollm2.cfg.n_heads)
    assert scores.max() == pytest.approx(1.0)  # some head copies every answer token
    assert (scores > 0.1).mean() < 0.25  # and few do


def test_needle_answer_that_cannot_be_located_is_an_error(smollm2):
    from interp.errors import InterpError
    from interp.heads.retrieval import build_test

    bad = {"needle": "The code is red.", "question": "What is the code?", "answer": "green"}
    with pytest.raises(InterpError, match="'green' is not a substring"):
        build_test(smollm2, bad, 300, 0.5)
    with pytest.raises(Exception, match="context window"):
        build_test(smollm2, bad, smollm2.cfg.n_ctx + 1, 0.5)


def test_induction_heads_found_and_causal_on_smollm2(smollm2):
    from interp.heads import scan

    scores = scan(smollm2, ["induction"], lengths=(30,), samples=4, text_samples=1, text_tokens=64, progress=False)
    check = scores.checks["induction_ablation"]
    assert scores.top("induction", 1)["value"][0] > 0.5
    assert check["loss_increase_top"] > 3 * max(check["loss_increase_random_mean"], 0.1)


def test_readme_notebook_example_runs(smollm2, capsys):
    import re
    from pathlib import Path

    readme = (Path(__file__).parent.parent / "README.md").read_text()
    code = re.search(r"## In a notebook\n\n```python\n(.*?)```", readme, re.S).group(1)
    assert len([line for line in code.splitlines() if line.strip()]) <= 10
    exec(compile(code, "README.md", "exec"), {})
    out = capsys.readouterr().out
    assert "layer" in out and "head" in out
