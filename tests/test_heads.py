"""Head scores on hand-wired heads, retrieval scoring by hand count, reports and the CLI."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from wired_models import CharTokenizer, alice_word_tokenizer, wired_gpt2, wired_ngram_gpt2

import interp
from interp.errors import InterpError, PromptTooLongError, UnknownNameError
from interp.heads import HeadScores, scan
from interp.heads.retrieval import (
    NeedleTest,
    RetrievalResult,
    copy_scores,
    greedy_decode,
    needle_recall,
    rouge1_recall,
    zero_queries_when_decoding,
)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def wired():
    return interp.Model(wired_gpt2(), CharTokenizer(), name="wired-gpt2")


@pytest.fixture(scope="module")
def wired_scores(wired):
    return scan(wired, ["prev_token", "duplicate", "induction", "prev_token_text", "duplicate_text", "induction_text",
                        "ngram"], lengths=(8, 12), samples=8,
                text_tokens=24, text_samples=4, causal_checks=True, progress=False)


def test_wired_heads_score_near_one_where_wired_and_near_zero_elsewhere(wired_scores):
    s = wired_scores
    expected = {  # score -> the head wired for it (layer, head)
        "prev_token": (0, 0), "prev_token_text": (0, 0), "induction": (1, 0), "ngram1": (1, 0), "duplicate": (1, 1),
    }
    for score, (layer, head) in expected.items():
        m = s.matrix(score)
        assert m[layer, head] > 0.9, (score, m)
        assert m[0, 1] < 0.1, (score, m)  # the BOS sink is none of these
    # On natural text every row counts, also first occurrences that have nothing to match, so
    # a perfect head scores the share of rows with a match; it must still stand out.
    for score, (layer, head) in {"induction_text": (1, 0), "duplicate_text": (1, 1)}.items():
        m = s.matrix(score)
        assert m[layer, head] > 0.3 and m[layer, head] > 3 * np.delete(m.ravel(), layer * 2 + head).max(), (score, m)
    assert s.matrix("prev_token")[1, 0] < 0.2 and s.matrix("induction")[0, 0] < 0.2
    assert s.matrix("duplicate")[1, 0] < 0.5  # induction targets are not the duplicates themselves


@pytest.fixture(scope="module")
def wired_ngram():
    return interp.Model(wired_ngram_gpt2(), CharTokenizer(), name="wired-ngram-gpt2")


def test_wired_ngram_heads_score_near_one_where_wired_and_near_zero_elsewhere(wired_ngram):
    # 128-character windows of the shipped text hold repeated 2-, 3- and 4-grams.
    s = scan(wired_ngram, ["ngram"], text_tokens=128, text_samples=8, causal_checks=False, progress=False)
    for n in (1, 2, 3, 4):
        m = s.matrix(f"ngram{n}")
        assert m[1, n - 1] > 0.9, (n, m)  # L1H(n-1) is wired for order n
        assert m[1, 4] < 0.1 and m[0, 4] < 0.1, (n, m)  # the BOS sinks
        assert m[0, :4].max() < 0.2, (n, m)  # the shift heads of layer 0
    # An order-n head only partly attends where a longer context matches, an order-4 head
    # only on part of the rows where the current token recurs.
    assert s.matrix("ngram4")[1, 0] < 0.3 and s.matrix("ngram2")[1, 0] < 0.5
    assert s.matrix("ngram1")[1, 3] < 0.8


def _tl_mul(patterns, detection, rows, exclude_bos, exclude_current):
    """TransformerLens's "mul" score from dense patterns, pooled over sequences, and the mean
    considered mass per row: ([H], [H])."""
    num = den = 0.0
    for a, det in zip(patterns, detection, strict=True):  # a: [H, P, P] one sequence
        a = a.clone().double()
        if exclude_bos:
            a[:, :, 0] = 0
        if exclude_current:
            a = a * (1 - torch.eye(a.shape[-1], dtype=a.dtype))
        a = a[:, rows]
        num = num + (a * det[rows]).sum(dim=(-1, -2))
        den = den + a.sum(dim=(-1, -2))
    return num / den, den / (len(patterns) * len(rows))


@pytest.mark.parametrize("exclude_bos,exclude_current", [(False, False), (True, False), (False, True), (True, True)])
def test_scores_equal_transformerlens_definition_on_dense_patterns(wired, exclude_bos, exclude_current):
    from interp.heads.sequences import repeated_random

    length, samples = 10, 4
    got = scan(wired, ["prev_token", "duplicate", "induction"], lengths=(length,), samples=samples,
               text_tokens=16, text_samples=1, exclude_bos=exclude_bos, exclude_current=exclude_current,
               causal_checks=False, progress=False)
    ids = repeated_random(wired, length, samples, seed=0 + length)
    wired.hf.set_attn_implementation("interp_eager")
    try:
        with torch.no_grad():
            att = wired.hf(input_ids=ids, output_attentions=True).attentions
    finally:
        wired.hf.set_attn_implementation("interp_sdpa")
    n = ids.shape[1]
    dets = {"prev_token": [], "duplicate": [], "induction": []}
    for seq in ids:
        dup = (seq[:, None] == seq[None, :]).double().tril(-1)
        ind = torch.zeros_like(dup)
        ind[:, 1:] = dup[:, :-1]
        dets["prev_token"].append(torch.diag(torch.ones(n - 1, dtype=torch.double), -1))
        dets["duplicate"].append(dup)
        dets["induction"].append(ind.tril())
    rows = {"prev_token": torch.arange(n), "duplicate": torch.arange(n - length, n), "induction": torch.arange(n - length, n)}
    for score in dets:
        for layer in range(2):
            expected, mass = _tl_mul([a for a in att[layer]], dets[score], rows[score], exclude_bos, exclude_current)
            meaningful = (mass > 1e-3).numpy()  # heads with (nearly) all mass on excluded keys score 0 here
            np.testing.assert_allclose(got.matrix(score)[layer][meaningful], expected.numpy()[meaningful], atol=1e-5, err_msg=score)
            assert np.all(got.matrix(score)[layer][(mass < 1e-6).numpy()] == 0)


def test_induction_ablation_check_hurts_more_than_random(wired_scores):
    check = wired_scores.checks["induction_ablation"]
    assert check["top_heads"][0] == {"layer": 1, "head": 0}
    assert check["loss_increase_top"] > 1.0
    assert check["loss_increase_top"] > 5 * max(check["loss_increase_random_mean"], 0.01)


def test_retrieval_copy_score_matches_hand_count():
    prompt = torch.tensor([5, 6, 7, 8, 9, 7, 3])
    span = (2, 5)  # answer tokens 7, 8, 9
    generated = [7, 8, 9, 4]
    # [steps][layers=1][heads=3]: head 0 copies every answer token; head 1 points into the span
    # at the wrong token once and at a right one once; head 2 points at a 7 outside the span.
    argmax = [torch.tensor([[2, 3, 5]]), torch.tensor([[3, 2, 0]]), torch.tensor([[4, 4, 5]]), torch.tensor([[6, 6, 6]])]
    score = copy_scores(prompt, span, generated, argmax)
    np.testing.assert_allclose(score, [[3 / 3, 1 / 3, 0.0]])


def test_rouge1_recall():
    assert rouge1_recall("blue harbor seven", "The password is Blue Harbor seven.") == 1.0
    assert rouge1_recall("blue harbor seven", "blue lagoon") == pytest.approx(1 / 3)


def test_report_round_trip(wired_scores, tmp_path):
    out = wired_scores.save(tmp_path / "report")
    data = json.loads((out / "head_scores.json").read_text())
    assert data["model"] == "wired-gpt2" and {"settings", "versions", "scores"} <= set(data)
    assert {"score", "layer", "head", "value"} == set(data["scores"][0])
    assert {"ngram1", "ngram2", "ngram3", "ngram4"} <= {r["score"] for r in data["scores"]}
    table = pd.read_parquet(out / "head_scores.parquet")
    assert len(table) == len(wired_scores.df)
    page = (out / "report.html").read_text()
    assert "plotly" in page and "Induction: mean-ablation" in page
    again = HeadScores.load(out)
    np.testing.assert_allclose(again.matrix("induction"), wired_scores.matrix("induction"))
    assert list(out.parent.glob(".report*")) == []


def test_interrupted_scan_resumes(wired, tmp_path, monkeypatch):
    from interp.heads import units as scan_module

    class Killed(Exception):
        """Stands for the process being stopped part-way."""

    calls, armed = [], [True]
    real = scan_module.score_pattern_unit

    def flaky(*args, **kwargs):
        calls.append(args[1])
        if armed[0] and len(calls) == 3:
            armed[0] = False
            raise Killed
        return real(*args, **kwargs)

    monkeypatch.setattr(scan_module, "score_pattern_unit", flaky)
    kwargs = dict(lengths=(8, 12), samples=4, batch_size=2, text_tokens=16, text_samples=2,
                  causal_checks=False, progress=False, checkpoint=str(tmp_path / "partial"))
    with pytest.raises(Killed):
        scan(wired, ["induction"], **kwargs)
    done_before = len(calls) - 1
    calls.clear()
    resumed = scan(wired, ["induction"], **kwargs)
    assert len(calls) == len(scan_module.pattern_units(resumed.settings, ["induction"])) - done_before
    monkeypatch.setattr(scan_module, "score_pattern_unit", real)
    fresh = scan(wired, ["induction"], **{**kwargs, "checkpoint": None})
    np.testing.assert_allclose(resumed.matrix("induction"), fresh.matrix("induction"))


def test_scan_computes_only_the_scores_asked_for(wired):
    s = scan(wired, ["induction"], lengths=(8,), samples=2, causal_checks=False, progress=False)
    assert s.scores == ["induction"]
    s = scan(wired, ["ngram"], lengths=(8,), text_tokens=16, text_samples=2, causal_checks=False, progress=False)
    assert s.scores == ["ngram1", "ngram2", "ngram3", "ngram4"]


def test_bad_input(wired, tmp_path):
    with pytest.raises(UnknownNameError, match="unknown score 'inductoin'.*induction"):
        scan(wired, ["inductoin"])
    with pytest.raises(PromptTooLongError, match="context window is 32"):
        scan(wired, ["induction"], lengths=(20,))
    with pytest.raises(UnknownNameError, match="unknown score 'nope'"):
        HeadScores.from_arrays({"a": np.zeros((2, 2))}, model="m").top("nope")


def test_cli_bad_input_leaves_no_report(tmp_path, capsys):
    from interp.cli import main

    out = tmp_path / "r"
    assert main(["heads", "no-such-model", "--out", str(out)]) == 2
    assert main(["heads", "smollm2-135m", "--scores", "induction,bogus", "--out", str(out)]) == 2
    assert "bogus" in capsys.readouterr().err
    assert not out.exists()


def test_retrieval_lengths_beyond_context_fail_before_any_work(wired, monkeypatch):
    from interp.heads import units

    monkeypatch.setattr(units, "score_pattern_unit", lambda *a, **k: pytest.fail("work started"))
    with pytest.raises(PromptTooLongError, match="exceed wired-gpt2's context window of 32"):
        scan(wired, ["induction", "retrieval"], lengths=(8,), retrieval={"lengths": (64,)})


def test_text_tokens_beyond_context_fail_before_any_work(wired, tmp_path, monkeypatch):
    from interp.heads import units

    monkeypatch.setattr(units, "score_pattern_unit", lambda *a, **k: pytest.fail("work started"))
    partial = tmp_path / ".r.partial"
    with pytest.raises(PromptTooLongError, match="text_tokens.*context window of 32"):
        scan(wired, ["prev_token_text"], lengths=(8,), text_tokens=64, checkpoint=str(partial))
    with pytest.raises(InterpError, match="samples must be an integer of at least 1"):
        scan(wired, ["induction"], lengths=(8,), samples=0, checkpoint=str(partial))
    assert list(tmp_path.iterdir()) == []


def _digitless_llama():
    """A tiny random Llama whose tokenizer's normaliser removes digits (they get no token)."""
    from transformers import AutoModelForCausalLM, LlamaConfig

    tok = alice_word_tokenizer(drop="0123456789")
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)
    return interp.Model(AutoModelForCausalLM.from_config(cfg).eval(), tok, name="digitless-llama")


def test_needle_answer_without_tokens_fails_before_any_work(tmp_path, monkeypatch):
    from interp.heads import retrieval, units

    model = _digitless_llama()
    monkeypatch.setattr(units, "score_pattern_unit", lambda *a, **k: pytest.fail("work started"))
    monkeypatch.setattr(retrieval, "greedy_decode", lambda *a, **k: pytest.fail("decoding started"))
    good = {"needle": "The door is blue.", "question": "What colour is the door?", "answer": "blue"}
    # The answer is a substring of the needle, but the tokenizer leaves no token on it.
    bad = {"needle": "The door code is 4711.", "question": "What is the door code?", "answer": "4711"}
    partial = tmp_path / ".r.partial"
    with pytest.raises(InterpError, match="could not locate the answer '4711'"):
        scan(model, ["induction", "retrieval"], lengths=(4,), text_tokens=64, checkpoint=str(partial),
             retrieval={"lengths": (100,), "needles": [good, bad], "mask_k": 1})
    with pytest.raises(InterpError, match="'green' is not a substring"):
        scan(model, ["retrieval"], retrieval={"lengths": (100,), "needles": [{**good, "answer": "green"}], "mask_k": 1})
    with pytest.raises(UnknownNameError, match="unknown retrieval setting 'lenghts'"):
        scan(model, ["retrieval"], retrieval={"lenghts": (100,)})
    with pytest.raises(InterpError, match="mask_k 1..4"):
        scan(model, ["retrieval"], retrieval={"lengths": (100,), "mask_k": 10})
    assert list(tmp_path.iterdir()) == []


def test_masking_zeroes_queries_for_every_answer_token_the_first_included(wired):
    # BOS, then 3 5 7 9 11, then 3 again: the induction head L1H0 predicts 5 7 9 ...
    ids = torch.tensor([[0, 3, 5, 7, 9, 11, 3]])
    mask = {"blocks.1.attn.hook_q": zero_queries_when_decoding([0])}
    assert greedy_decode(wired, ids, 3) == [5, 7, 9]
    masked = greedy_decode(wired, ids, 3, interventions=mask)

    def zero_last_query(q, site):  # by hand: head 0's query zeroed at the last prompt position only
        q = q.clone()
        q[:, -1, [0]] = 0
        return q

    by_hand = int(wired.run(ids, interventions={"blocks.1.attn.hook_q": zero_last_query})[0, -1].argmax())
    assert masked[0] == by_hand != 5  # the first answer token is produced with the head masked
    test = NeedleTest(ids, (2, 5), "5 7 9", length=7, depth=0.0, needle=0)
    assert needle_recall(wired, [test], 3) == 1.0
    assert needle_recall(wired, [test], 3, mask) == 0.0  # the masking check decodes the same way


def test_share_above_threshold_uses_the_settings_threshold():
    result = RetrievalResult(np.array([[0.05, 0.2, 0.5, np.nan]]), [], threshold=0.3)
    summary = result.summary()
    assert summary["threshold"] == 0.3 and summary["share_above_threshold"] == pytest.approx(1 / 3)
    assert RetrievalResult(np.array([[0.05, 0.2, 0.5]]), []).summary()["share_above_threshold"] == pytest.approx(2 / 3)


def test_masking_check_prefills_each_batch_once_and_matches_decoding_each_condition_anew(wired, monkeypatch):
    """The masking check decodes every condition from one prefill per batch of tests (masking
    acts on decoding steps only), takes the unmasked recall from the scoring pass, and gets the
    same recalls as decoding each test under each condition alone."""
    from interp.heads import causal, retrieval
    from interp.heads.table import HeadScores

    tests = [NeedleTest(torch.tensor([[0, 3, 5, 7, 9, 11, 3]]), (2, 5), "5 7 9", length=7, depth=0.0, needle=0),
             NeedleTest(torch.tensor([[0, 4, 6, 8, 10, 12, 4]]), (2, 5), "6 8 10", length=7, depth=1.0, needle=0)]
    monkeypatch.setattr(retrieval, "needle_tests", lambda model, cfg: tests)
    scores = np.zeros((wired.cfg.n_layers, wired.cfg.n_heads))
    scores[1, 0] = 0.9  # the wired induction head copies the answer
    table = HeadScores.from_arrays({"retrieval": scores}, model="wired")
    table.checks["retrieval_tests"] = {"per_test": [
        {"needle": t.needle, "length": t.length, "depth": t.depth, "recall": needle_recall(wired, [t], 3)}
        for t in tests]}
    cfg = {"mask_k": 1, "threshold": 0.1, "lengths": [7], "max_new_tokens": 3, "mask_seeds": [0, 1]}
    prefills = []
    handle = wired.hf.register_forward_pre_hook(
        lambda m, args, kwargs: prefills.append(1) if kwargs["input_ids"].shape[1] > 1 else None, with_kwargs=True)
    try:
        check = causal.masking_check(wired, table, cfg, progress=False)
    finally:
        handle.remove()
    assert len(prefills) == len(retrieval.test_groups(tests)) == 1
    expected = {"none": needle_recall(wired, tests, 3),
                "top": needle_recall(wired, tests, 3, {"blocks.1.attn.hook_q": zero_queries_when_decoding([0])})}
    for s, heads in check["random_heads"].items():
        by_layer: dict[int, list[int]] = {}
        for h in heads:
            by_layer.setdefault(h["layer"], []).append(h["head"])
        expected[f"random_{s}"] = needle_recall(wired, tests, 3, {
            f"blocks.{layer}.attn.hook_q": zero_queries_when_decoding(hs) for layer, hs in by_layer.items()})
    assert check["recall"] == pytest.approx(expected)
    assert check["recall"]["none"] == 1.0 and check["recall"]["top"] < 1.0


class _StopTokenizer:
    """Decodes every token as its number, and tokens divisible by 7 as a newline (a stop)."""

    eos_token_id = None

    def decode(self, ids):
        return "".join("\n" if int(t) % 7 == 0 else f" {int(t)}" for t in ids)


def test_decoding_masking_conditions_as_rows_equals_decoding_each_alone(tiny):
    """The masking check decodes its conditions as rows of one batch from one prefill; each row
    equals greedy decoding of its condition alone, for every family (GQA, sliding windows,
    soft-capping), with rows that stop at different steps. (That masking changes the decoded
    answer is checked on the wired model, above.)"""
    from interp.heads import retrieval

    tiny.tokenizer = _StopTokenizer()
    with torch.no_grad():  # sharper attention than the tiny models' initialisation, so masks matter more
        for name, p in tiny.hf.named_parameters():
            if p.dim() == 2 and not any(e in name for e in ("embed", "wte", "lm_head")):
                p.mul_(4)
    n_layers, n_heads = tiny.cfg.n_layers, tiny.cfg.n_heads
    ids = torch.randint(1, tiny.cfg.d_vocab, (1, 30), generator=torch.Generator().manual_seed(0))
    conditions = [[], [(0, 0)], [(n_layers - 1, h) for h in range(n_heads)], [(layer, 1) for layer in range(n_layers)]]
    masks = torch.zeros(len(conditions), n_layers, n_heads, dtype=torch.bool)
    for r, heads in enumerate(conditions):
        for layer, h in heads:
            masks[r, layer, h] = True
    rowwise = {f"blocks.{layer}.attn.hook_q": retrieval.zero_queries_by_row(masks[:, layer]) for layer in range(n_layers)}
    rows = retrieval.decode_batch(tiny, retrieval.prefill(tiny, ids).repeat(len(conditions)), 12, interventions=rowwise)
    for heads, row in zip(conditions, rows, strict=True):
        by_layer: dict[int, list[int]] = {}
        for layer, h in heads:
            by_layer.setdefault(layer, []).append(h)
        alone = retrieval.greedy_decode(tiny, ids, 12, interventions={
            f"blocks.{layer}.attn.hook_q": zero_queries_when_decoding(hs) for layer, hs in by_layer.items()})
        assert row == alone


def test_a_scan_in_one_process_reuses_the_scoring_prefills_for_the_masking_check(wired, monkeypatch):
    """Scoring keeps the prefills of the tests the masking check decodes again, so the check
    prefills nothing, and its recalls equal a check that prefills anew."""
    from interp.heads import causal, retrieval
    from interp.heads.table import HeadScores

    tests = [NeedleTest(torch.tensor([[0, 3, 5, 7, 9, 11, 3]]), (2, 5), "5 7 9", length=7, depth=0.0, needle=0),
             NeedleTest(torch.tensor([[0, 4, 6, 8, 10, 12, 4]]), (2, 5), "6 8 10", length=7, depth=1.0, needle=0)]
    monkeypatch.setattr(retrieval, "needle_tests", lambda model, cfg: tests)
    cfg = {"mask_k": 1, "threshold": 0.1, "lengths": [7], "max_new_tokens": 3, "mask_seeds": [0, 1],
           "recall_threshold": 0.5}
    part = retrieval.score_tests(wired, tests, cfg, keep=True)
    assert len(retrieval._kept[wired]) == 1  # the batch's prefill
    result = retrieval.merge_tests(tests, retrieval.split_group(part, len(tests)), cfg,
                                   (wired.cfg.n_layers, wired.cfg.n_heads))
    table = HeadScores.from_arrays({"retrieval": result.scores}, model="wired")
    table.checks["retrieval_tests"] = result.summary()
    prefills = []
    handle = wired.hf.register_forward_pre_hook(
        lambda m, args, kwargs: prefills.append(1) if kwargs["input_ids"].shape[1] > 1 else None, with_kwargs=True)
    try:
        reused = causal.masking_check(wired, table, cfg, progress=False)
    finally:
        handle.remove()
    assert prefills == [] and wired not in retrieval._kept  # none made, none left behind
    assert causal.masking_check(wired, table, cfg, progress=False) == reused  # prefilled anew


def test_ranking_orders_every_head_by_layer_and_head():
    """The masking check's ranking (HeadScores.ranking): every head, highest first, a missing score
    last, each named by its layer and head; without ties its head is ``top``'s."""
    m = np.array([[0.1, np.nan, 0.7], [0.3, 0.9, 0.0]])
    table = HeadScores.from_arrays({"retrieval": m}, model="x")
    ranking = table.ranking("retrieval")
    assert list(zip(ranking["layer"], ranking["head"], strict=True)) == [(1, 1), (0, 2), (1, 0), (0, 0), (1, 2), (0, 1)]
    assert np.isnan(ranking["value"].iloc[-1]) and ranking["value"].iloc[0] == 0.9
    top = table.top("retrieval", 5)
    assert top[["layer", "head"]].equals(ranking[["layer", "head"]].head(5))
