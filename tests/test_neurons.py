"""Feature neurons: decode, find, evidence, clamping, agreement, reports and the CLI.

Tiny models get neurons planted along an unembedding direction (divided by the norm gains
the decode applies, so the decoded vector is exactly that direction); then decode and find
must name the planted token, and clamping must make it the prediction.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest
import torch
from tiny_models import VOCAB, build

import interp
import interp.neurons as N
from interp.errors import InterpError, OutOfRangeError, UnknownNameError
from interp.neurons import decoding as decode_module

# -- a word-piece tokenizer over the tiny vocabulary -------------------------------------------

WORDS = [" dog", "dog", " cat", "cat", " the", "the", " Wis", "consin", " ran", " sat", " saw", " a", " <b>", " red"]
CHARS = list("abcdefghijklmnopqrstuvwxyz .,")


class WordTokenizer:
    """Greedy longest match over a fixed vocabulary: 0 pad, words, single characters, filler."""

    pad_token = eos_token = "<pad>"
    pad_token_id = eos_token_id = 0
    padding_side = "left"

    def __init__(self) -> None:
        self.vocab = ["<pad>", *WORDS, *CHARS]
        self.vocab += [f"<{i}>" for i in range(len(self.vocab), VOCAB)]
        self.ids = {t: i for i, t in enumerate(self.vocab)}

    def encode(self, text: str) -> list[int]:
        ids, i = [], 0
        while i < len(text):
            piece = max((t for t in self.vocab[1:] if text.startswith(t, i)), key=len, default=None)
            if piece is None:  # unknown character: skip it
                i += 1
                continue
            ids.append(self.ids[piece])
            i += len(piece)
        return ids

    def __call__(self, text, add_special_tokens=False, return_tensors=None, padding=False, **kwargs):
        if isinstance(text, str):
            return {"input_ids": self.encode(text)}
        rows = [self.encode(t) for t in text]
        width = max(map(len, rows))
        ids = [[0] * (width - len(r)) + r for r in rows]
        mask = [[0] * (width - len(r)) + [1] * len(r) for r in rows]
        return {"input_ids": torch.tensor(ids), "attention_mask": torch.tensor(mask)}

    def decode(self, ids, skip_special_tokens=False):
        return "".join(self.vocab[int(i)] for i in ids if not (skip_special_tokens and int(i) == 0))

    def batch_decode(self, rows, skip_special_tokens=False):
        return [self.decode(r, skip_special_tokens) for r in rows]


TOK = WordTokenizer()
DOG, RED = TOK.ids[" dog"], TOK.ids[" red"]
FAMILIES = ["llama", "gemma3", "gpt2", "gpt_neox"]


def tiny(family: str = "llama", seed: int = 0) -> interp.Model:
    return interp.Model(build(family, seed), WordTokenizer(), name=f"tiny-{family}")


def plant(model, layer: int, neuron: int, weights: str, token: int, scale: float = 20.0) -> torch.Tensor:
    """Set a neuron's weight vector so that its decoded vector gives the token a logit of ``scale``."""
    u = model.weight(model.adapter.unembed)[token].detach().float()
    target = scale * u / u.norm() ** 2
    gain = N.decoding_vectors(model, layer, weights)[0] / N.raw_vectors(model, layer, weights)[0].float()
    with torch.no_grad():
        N.raw_vectors(model, layer, weights)[neuron] = target / gain  # a view of the parameter
    return target


# -- decode ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("weights", ["up", "down"])
def test_decode_recovers_planted_token(family, weights):
    model = tiny(family)
    plant(model, 1, 5, weights, DOG)
    df = N.decode(model, weights, k=3, progress=False)
    assert len(df) == model.cfg.n_layers * model.cfg.d_mlp * 3
    assert list(df.columns) == ["layer", "neuron", "rank", "token", "token_id", "prob"]
    row = df[(df.layer == 1) & (df.neuron == 5) & (df["rank"] == 1)].iloc[0]
    assert (row.token_id, row.token) == (DOG, " dog") and row.prob > 0.5


def test_gate_weights_decode_gate_rows_and_gpt2_has_none():
    model = tiny("llama")
    plant(model, 2, 7, "gate", RED)
    df = N.decode(model, "gate", k=1, layers=[2], progress=False)
    assert df[df.neuron == 7].token_id.item() == RED
    with pytest.raises(UnknownNameError, match="no gated MLP"):
        N.decode(tiny("gpt2"), "gate", progress=False)


@pytest.mark.parametrize("family", ["llama", "gemma3", "gpt2"])
def test_effective_gain_matches_each_family_forward(family):
    model = tiny(family)
    norm = model.module(model.adapter.final_norm)
    expected = norm.weight.detach() + (1 if family == "gemma3" else 0)  # Gemma's RMSNorm scales by 1 + weight
    torch.testing.assert_close(N.effective_gain(norm, model.cfg.d_model), expected, rtol=1e-4, atol=1e-5)
    odd = torch.nn.LayerNorm(5)
    with torch.no_grad():
        odd.weight.copy_(torch.arange(1.0, 6.0))
        odd.bias.fill_(3.0)
    torch.testing.assert_close(N.effective_gain(odd, 5), torch.arange(1.0, 6.0), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("gains", [True, False])
def test_chunked_decode_equals_dense_softmax(monkeypatch, gains):
    monkeypatch.setattr(decode_module, "CHUNK", 37)  # several neuron chunks ...
    monkeypatch.setattr(decode_module, "VOCAB_BLOCK", 50)  # ... and vocabulary blocks
    model = tiny("gemma3")
    k = 4
    df = N.decode(model, k=k, apply_input_ln=gains, apply_final_norm=gains, progress=False)
    u = model.weight(model.adapter.unembed).detach().float()
    for layer in range(model.cfg.n_layers):
        w = N.raw_vectors(model, layer, "up").float()
        if gains:
            w = w * N.effective_gain(model.module(model.in_block(layer, model.adapter.ln_mlp)), w.shape[1])
            w = w * N.effective_gain(model.module(model.adapter.final_norm), w.shape[1])
        dense = torch.softmax(w @ u.T, dim=-1).topk(k)  # the whole [neurons x vocab] matrix
        got = df[df.layer == layer]
        np.testing.assert_array_equal(got.token_id.to_numpy().reshape(-1, k), dense.indices.numpy())
        np.testing.assert_allclose(got.prob.to_numpy().reshape(-1, k), dense.values.numpy(), rtol=1e-4, atol=1e-7)


# -- find ------------------------------------------------------------------------------------------


def test_find_ranks_planted_neuron_first():
    model = tiny("llama")
    plant(model, 2, 11, "up", DOG)
    hits = N.find(model, "dog", top=5, k=5, progress=False)
    top = hits.iloc[0]
    assert (top.layer, top.neuron, top.rank_of_concept, top.concept_token) == (2, 11, 1, " dog")
    assert top.concept_z > hits.concept_z.iloc[1:].max()
    assert hits.top_tokens[0].startswith("' dog'")
    assert {r["variant"] for r in hits.attrs["concept"]} == {"dog", " dog"}
    # exact probability of the concept tokens against a dense softmax
    w = N.decoding_vectors(model, 2, "up")[11]
    p = torch.softmax(w @ model.weight(model.adapter.unembed).detach().T, -1)
    assert hits.concept_prob[0] == pytest.approx(float(p[[DOG, TOK.ids["dog"]]].sum()), rel=1e-4)
    only = N.find(model, " dog", top=1, k=5, progress=False)  # leading space: that token only
    assert [r["variant"] for r in only.attrs["concept"]] == [" dog"]


def test_multi_token_word_is_reported_with_its_tokens():
    model = tiny("llama")
    with pytest.warns(N.ConceptSplitWarning, match=r"' Wisconsin' is 2 tokens \[' Wis', 'consin'\]"):
        hits = N.find(model, " Wisconsin", top=3, k=5, progress=False)
    (info,) = hits.attrs["concept"]
    assert info["tokens"] == [" Wis", "consin"] and info["split"] and info["used_id"] == TOK.ids[" Wis"]
    assert set(hits.concept_token) == {" Wis"}
    with pytest.raises(InterpError, match="is 2 tokens"):
        N.concept_tokens(model, " Wisconsin", on_split="error")
    with pytest.warns(N.ConceptSplitWarning), pytest.raises(InterpError, match="single token"):
        N.concept_tokens(model, " Wisconsin", on_split="skip")


# -- evidence --------------------------------------------------------------------------------------


def test_activation_evidence_separates_a_neuron_reading_the_concept_embedding():
    model = tiny("llama")
    layer, neuron = 0, 9
    e = model.weight(model.adapter.embed)[DOG].detach()
    with torch.no_grad():  # gate and up both read the " dog" embedding: fires where " dog" is
        for w in ("up", "gate"):
            N.raw_vectors(model, layer, w)[neuron] = 30 * e / e.norm()
    concept = ["the dog ran.", "a dog sat.", "the cat saw the dog.", "the dog saw a cat.", "the red dog ran."]
    control = ["the cat ran.", "a cat sat.", "the cat saw the cat.", "the cat saw a cat.", "the red cat ran."]
    ev = N.activation_evidence(model, layer, neuron, concept, control)
    assert ev.cohens_d > 2 and ev.concept_mean > ev.control_mean
    assert ev.site == f"blocks.{layer}.mlp.hook_post"  # the full name of the site read
    assert N.activation_evidence(model, layer, neuron, concept, control, site="post").cohens_d == ev.cohens_d
    # the number is the max over positions after the first, as a plain trace computes it
    with model.trace(concept[2], sites=f"blocks.{layer}.mlp.hook_post") as tr:
        pass
    assert ev.concept_values[2] == pytest.approx(float(tr[f"blocks.{layer}.mlp.hook_post"][0, 1:, neuron].max()))
    scan = N.activation_scan(model, concept, control)
    assert (scan.layer[0], scan.neuron[0]) == (layer, neuron) and scan.cohens_d[0] == pytest.approx(ev.cohens_d)


def test_cohens_d_matches_textbook_formula():
    a, b = np.array([1.0, 2.0, 3.0, 4.0]), np.array([0.0, 1.0, 1.0])
    pooled = np.sqrt((3 * a.var(ddof=1) + 2 * b.var(ddof=1)) / 5)
    assert N.cohens_d(a, b) == pytest.approx((a.mean() - b.mean()) / pooled)


def test_shipped_concept_sets_are_matched():
    sets = N.load_concepts()
    assert {"dog", "paris", "three"} <= set(sets) and len(N.neutral_prompts()) >= 1
    for name, s in sets.items():
        assert len(s["prompts"]) == len(s["controls"]) >= 10, name
        for word in s["words"]:
            assert all(re.search(rf"\b{word}\b", p) for p in s["prompts"]), name
            assert not any(re.search(rf"\b{word}\b", p) for p in s["controls"]), name
    with pytest.raises(UnknownNameError, match="dog"):
        N.concept_set("no-such-concept")


# -- clamping --------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", ["llama", "gemma3", "gpt2"])
def test_clamping_a_neuron_that_writes_a_token_makes_it_the_prediction(family):
    model = tiny(family)
    head = model.module(model.adapter.unembed)  # random unembeddings give near-uniform softmaxes:
    head.weight = torch.nn.Parameter(20 * head.weight.detach().clone())  # sharpen (and untie) them
    layer, neuron, prompt = model.cfg.n_layers - 1, 3, "the dog sat."
    post = N.vectors.post_mlp_norm(model, layer)
    if post is not None:  # Gemma normalises the MLP output, which caps what one neuron can write;
        with torch.no_grad():  # raise the cap above the residual stream's size
            post.weight.add_(10.0)
    base = model.run(prompt)[0, -1]
    word = min(WORDS, key=lambda w: float(base[TOK.ids[w]]))  # the least likely word before the clamp
    plant(model, layer, neuron, "down", TOK.ids[word])  # the down column decodes to that word
    unclamped = model.run(prompt)[0, -1]
    iv = N.clamp(model, layer, neuron, 200.0)
    assert (model.run(prompt, interventions=iv)[0].argmax(-1) == TOK.ids[word]).all()  # every position
    r = N.clamp_effect(model, layer, neuron, 200.0, prompt, [word], max_new_tokens=3)
    assert r.p_clamped > 0.9 and r.ratio > 10 and word in r.concept_tokens
    assert r.text_clamped == word * 3 and r.text_base != r.text_clamped
    torch.testing.assert_close(model.run(prompt)[0, -1], unclamped)  # the clamp's hooks are gone


def test_bad_indices_and_names_are_clear_errors():
    model = tiny("llama")
    with pytest.raises(OutOfRangeError, match="layer 3"):
        N.clamp(model, 3, 0, 1.0)
    with pytest.raises(OutOfRangeError, match="neuron 96"):
        N.clamp(model, 0, 96, 1.0)
    with pytest.raises(OutOfRangeError, match="neuron -1"):
        N.activation_evidence(model, 0, -1, ["a"], ["b"])
    with pytest.raises(OutOfRangeError):
        N.decode(model, layers=[5], progress=False)
    with pytest.raises(UnknownNameError, match="valid weights: up, gate, down"):
        N.decode(model, "upp", progress=False)
    with pytest.raises(InterpError, match="apply_input_ln"):
        N.decode(model, "down", apply_input_ln=True, progress=False)
    with pytest.raises(UnknownNameError, match="sort"):
        N.find(model, "dog", sort="size", progress=False)
    with pytest.raises(UnknownNameError, match="stat"):
        N.activation_evidence(model, 0, 0, ["the dog", "a dog"], ["the cat", "a cat"], stat="median")
    with pytest.raises(InterpError, match="at least two"):
        N.activation_evidence(model, 0, 0, ["the dog"], ["the cat"])
    with pytest.raises(UnknownNameError, match="blocks.\\*.mlp.hook_post"):
        N.neuron_activations(model, ["a dog"], site="blocks.*.attn.hook_z")
    with pytest.raises(InterpError, match="layers="):  # a site in one layer, while layers= chooses them
        N.neuron_activations(model, ["a dog"], site="blocks.1.mlp.hook_post")


# -- agreement, reports, CLI -----------------------------------------------------------------------


def test_agreement_counts_neurons_with_the_same_top_token():
    a, b = tiny("llama"), tiny("llama")
    assert N.agreement(a, b, progress=False).share == 1.0
    top = N.decode(b, k=1, layers=[1], progress=False).token_id.to_numpy()
    changed = [n for n in range(10) if top[n] != DOG][:5]
    for n in changed:
        plant(b, 1, n, "up", DOG)
    result = N.agreement(a, b, progress=False)
    n_all = 3 * a.cfg.d_mlp
    assert result.share == pytest.approx(1 - len(changed) / n_all)
    assert result.by_layer.set_index("layer").same_top.to_dict() == {0: 96, 1: 96 - len(changed), 2: 96}
    with pytest.raises(InterpError, match="different shapes"):
        N.agreement(a, tiny("gpt2"), progress=False)


def test_report_files_round_trip_and_html_is_self_contained(tmp_path):
    model = tiny("gpt2")
    TOK.vocab  # noqa: B018  (the vocabulary has a " <b>" token: it must not break the page)
    plant(model, 0, 0, "up", TOK.ids[" <b>"])
    df = N.decode(model, k=6, progress=False)
    paths = N.write_report(df, tmp_path / "out", "tiny")
    pd.testing.assert_frame_equal(pd.read_parquet(paths["parquet"]), df)
    page = paths["html"].read_text()
    blob = page.split('<script type="application/json" id="data">')[1].split("</script>")[0]
    assert "<b>" not in blob and "http" not in page.replace("http-equiv", "")
    data = json.loads(blob)
    assert data["k"] == 5 and len(data["layer"]) == 3 * model.cfg.d_mlp == len(data["tok_idx"]) // 5
    assert data["tok"][data["tok_idx"][0]] == " <b>"


def test_cli_writes_report_and_steers(tmp_path, monkeypatch, capsys):
    from interp.cli import neurons as cli

    model = tiny("llama")
    plant(model, 2, 4, "up", RED)
    plant(model, 2, 4, "down", RED)
    monkeypatch.setattr(interp, "load", lambda *a, **k: model)
    from interp.cli import Parser

    parser = Parser()  # the CLI's parser: it fills in the defaults read from the analysis functions
    cli.register(parser.add_subparsers())
    args = parser.parse_args(["neurons", "tiny", "--out", str(tmp_path), "--find", " red", "--top", "3",
                              "--clamp", "200", "--prompt", "the dog", "--max-new-tokens", "2", "--quiet"])
    assert args.run(args) == 0
    out = capsys.readouterr().out
    assert (tmp_path / "neurons.parquet").exists() and (tmp_path / "neurons.html").exists()
    assert "clamping L2N4 at 200" in out and "' red red'" in out
    with pytest.raises(InterpError, match="nothing to do"):
        args.run(parser.parse_args(["neurons", "tiny"]))


# -- the real model ----------------------------------------------------------------------------------


@pytest.mark.real_model
def test_real_decode_last_layer_matches_dense_and_gain_is_weight(smollm2):
    norm = smollm2.module(smollm2.adapter.final_norm)
    torch.testing.assert_close(N.effective_gain(norm, smollm2.cfg.d_model), norm.weight.detach().float())
    df = N.decode(smollm2, k=3, layers=[29], progress=False)
    assert len(df) == 1536 * 3
    v = N.decoding_vectors(smollm2, 29, "up")[:64]
    dense = torch.softmax(v @ smollm2.weight("lm_head").detach().float().T, -1).topk(3)
    np.testing.assert_array_equal(df.token_id.to_numpy()[: 64 * 3].reshape(-1, 3), dense.indices.numpy())


@pytest.mark.real_model
def test_real_shipped_concepts_are_single_tokens(smollm2):
    for s in N.load_concepts().values():
        for word in s["words"]:
            table = N.concept_tokens(smollm2, " " + word)
            assert not table.split.any(), table


@pytest.mark.real_model
def test_real_dog_neuron_decodes_and_steers_and_suppression_neuron_steers_negatively(smollm2):
    # Found by case_studies/feature_neurons.py: L29N808's gate row and down column decode to dog
    # tokens; L29N750's up row decodes to " coffee" but its down column to minus " coffee".
    hits = N.find(smollm2, " dog", weights="gate", layers=[29], top=1, progress=False)
    assert (hits.neuron[0], hits.rank_of_concept[0]) == (808, 1)
    prompt = "Yesterday afternoon, I went out and bought a"
    assert N.clamp_effect(smollm2, 29, 808, 20.0, prompt, " dog", max_new_tokens=1).ratio > 10
    coffee = N.concept_tokens(smollm2, " coffee")["used_id"].tolist()
    base = N.concept_prob(smollm2, prompt, coffee)
    assert N.concept_prob(smollm2, prompt, coffee, N.clamp(smollm2, 29, 750, -20.0)) > 5 * base
    assert N.concept_prob(smollm2, prompt, coffee, N.clamp(smollm2, 29, 750, 20.0)) < base / 5


# -- the decode cache behind find ------------------------------------------------------------------


@pytest.fixture
def decode_calls(monkeypatch) -> list[int]:
    """One entry per call of the decoder behind ``find`` (its cache is working while none are added)."""
    calls: list[int] = []
    real = decode_module.decode_topk

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(decode_module, "decode_topk", counting)
    return calls


def test_find_decodes_once_per_model_settings_and_weights(decode_calls):
    calls = decode_calls
    model = tiny("llama")
    n = model.cfg.n_layers
    first = N.find(model, "dog", top=5, k=5, progress=False)
    assert len(calls) == n
    again = N.find(model, ["cat", " red"], top=5, k=5, progress=False)  # another concept, same decode
    assert len(calls) == n
    pd.testing.assert_frame_equal(N.find(model, "dog", top=5, k=5, progress=False), first)
    assert len(calls) == n and set(again.concept_token) <= {"cat", " cat", " red"}
    N.find(model, "dog", top=5, k=6, progress=False)  # another k
    N.find(model, "dog", top=5, k=5, weights="down", progress=False)  # other weights
    N.find(model, "dog", top=5, k=5, apply_final_norm=False, progress=False)  # another norm option
    N.find(model, "dog", top=5, k=5, layers=[1], progress=False)  # other layers
    assert len(calls) == 4 * n + 1
    N.find(tiny("llama"), "dog", top=5, k=5, progress=False)  # another model object with equal weights
    assert len(calls) == 5 * n + 1
    # Weights changed in place: the table is rebuilt and sees the planted neuron.
    plant(model, 2, 11, "up", DOG)
    hits = N.find(model, "dog", top=5, k=5, progress=False)
    assert len(calls) == 6 * n + 1 and (hits.layer[0], hits.neuron[0]) == (2, 11)
    # A replaced parameter also invalidates it.
    head = model.module(model.adapter.unembed)
    head.weight = torch.nn.Parameter(head.weight.detach().clone())
    N.find(model, "dog", top=5, k=5, progress=False)
    assert len(calls) == 7 * n + 1


def test_find_notices_an_edit_through_weight_data(decode_calls):
    model = interp.Model(build("llama"), WordTokenizer(), name="tiny-llama")
    N.find(model, "dog", top=5, k=5, progress=False)
    assert len(decode_calls) == 3
    up = model.weight(model.in_block(2, model.adapter.mlp_pre_linear))  # [d_mlp, d_model]
    version = up._version
    u = model.weight(model.adapter.unembed)[DOG].detach()
    gain = N.decoding_vectors(model, 2, "up")[0] / N.raw_vectors(model, 2, "up")[0]
    up.data[11] = 20 * u / u.norm() ** 2 / gain  # through .data: the parameter's version counter stays
    assert up._version == version
    hits = N.find(model, "dog", top=5, k=5, progress=False)
    assert len(decode_calls) == 6 and (hits.layer[0], hits.neuron[0]) == (2, 11)


def test_find_settings_are_checked_before_decoding(monkeypatch):
    monkeypatch.setattr(decode_module, "decode_topk", lambda *a, **k: pytest.fail("decoded"))
    model = tiny("llama")
    with pytest.raises(InterpError, match=r"^find: k \(top tokens per neuron, at most the vocabulary\) must be an integer in 1..128, got 0$"):
        N.find(model, "dog", k=0, progress=False)
    with pytest.raises(InterpError, match=r"^find: top \(None: every neuron\) must be an integer of at least 1, got 0$"):
        N.find(model, "dog", top=0, progress=False)
    with pytest.raises(OutOfRangeError, match=r"^layer 3 is out of range: valid layers are 0..2$"):
        N.find(model, "dog", layers=[3], progress=False)
    with pytest.raises(UnknownNameError, match=r"^unknown weights 'upp'; valid weights: up, gate, down"):
        N.find(model, "dog", weights="upp", progress=False)
    with pytest.raises(UnknownNameError, match=r"^unknown on_split 'all'; valid on_split values: first, skip, error$"):
        N.find(model, "dog", on_split="all", progress=False)
