"""Bad inputs to the public API: one clear error, raised before any forward pass, never a wrong number."""

from __future__ import annotations

import contextlib
import math
import re

import pytest
import torch
from tiny_models import VOCAB, NullTokenizer, build

import interp
import interp.neurons as N
from interp import Model
from interp.circuits.ablation import ablation_scan
from interp.circuits.attribution import attribution_patching
from interp.circuits.patching import activation_patching, logit_diff
from interp.core import interventions as iv
from interp.errors import BadInputError, InterpError, OutOfRangeError, UnknownNameError
from interp.probes.steering import steer

pytestmark = pytest.mark.usefixtures("one_thread")

WORDS = "The cat sat on the mat . Paris Rome dog is in a".split()


def word_tokenizer(bos: bool = False):
    """A real Hugging Face fast tokenizer over whole words (built in memory), optionally adding BOS."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "<s>": 1, "<unk>": 2}
    for w in WORDS:
        vocab.setdefault(w, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    if bos:
        tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", unk_token="<unk>")


@pytest.fixture(scope="module")
def model():
    return Model(build("llama"), word_tokenizer(), name="tiny-llama")


@pytest.fixture(scope="module")
def ids_model():
    return Model(build("llama"), NullTokenizer(), name="tiny-llama")


@contextlib.contextmanager
def no_forward(m: Model):
    """Fails if the model runs a forward pass inside the block."""
    calls: list[int] = []
    handle = m.hf.register_forward_pre_hook(lambda *a: calls.append(1))
    try:
        yield
    finally:
        handle.remove()
    assert not calls, "a forward pass ran before the error"


def raises(m: Model, error: type[Exception], message: str):
    """The exact message (pytest.raises with the whole text escaped), and no forward before it."""
    stack = contextlib.ExitStack()
    stack.enter_context(no_forward(m))
    stack.enter_context(pytest.raises(error, match="^" + re.escape(message) + "$"))
    return stack


IDS = torch.tensor([[5, 9, 17]])


# -- 1. attention patterns need every key position ------------------------------------------------


def test_pattern_from_positions_or_reducer_capture_raises(model):
    with model.trace("The cat sat on", sites="blocks.2.attn.hook_[qk]", positions=[-1]) as tr:
        pass
    with pytest.raises(BadInputError, match=re.escape(
            "attention_pattern(layer=2) needs blocks.2.attn.hook_q at every position, but this trace kept only "
            "positions [-1] (positions=); each row's softmax runs over all earlier keys, so capture hook_q and hook_k "
            "at all positions (leave out positions=) and pick query rows with rows=")):
        interp.attention_pattern(tr, 2, heads=[0])
    with model.trace("The cat sat on", sites="blocks.2.attn.hook_q",
                     reduce={"blocks.2.attn.hook_k": lambda k: k * 1}) as tr:
        pass
    with pytest.raises(BadInputError, match=re.escape(
            "attention_pattern(layer=2) needs blocks.2.attn.hook_k itself, but this trace captured it through a "
            "reducer (reduce=), which stores the reducer's result; capture hook_q and hook_k at all positions without "
            "a reducer (sites='blocks.2.attn.hook_[qk]') and pick query rows with rows=")):
        interp.attention_pattern(tr, 2)
    # The right way: every position captured, the query row picked with rows=.
    with model.trace("The cat sat on", sites="blocks.2.attn.hook_[qk]") as tr:
        pass
    row = interp.attention_pattern(tr, 2, heads=[0], rows=[-1])
    assert row.shape == (1, 1, 1, 4) and math.isclose(float(row.sum()), 1.0, rel_tol=1e-5)
    # A full slice keeps every position, so it is fine.
    with model.trace("The cat sat on", sites="blocks.2.attn.hook_[qk]", positions=slice(None)) as tr2:
        pass
    torch.testing.assert_close(interp.attention_pattern(tr2, 2, heads=[0], rows=[-1]), row)


def test_pattern_of_a_generate_step_with_a_kv_cache(ids_model):
    m = ids_model
    prompt = torch.randint(1, VOCAB, (1, 8), generator=torch.Generator().manual_seed(0))
    with m.trace(sites="blocks.1.attn.hook_[qk]") as tr:
        m.generate(prompt, max_new_tokens=3)
    step = interp.attention_pattern(tr, 1, dtype=torch.float64)  # the last step: 1 query, 10 cached keys
    assert step.shape == (1, m.cfg.n_heads, 1, 10)
    full_ids = torch.cat([prompt, torch.tensor([[int(t) for t in m.generate(prompt, 3)[0].split()]])], 1)
    with m.trace(full_ids[:, :10], sites="blocks.1.attn.hook_[qk]") as full:
        pass
    torch.testing.assert_close(step, interp.attention_pattern(full, 1, rows=[-1], dtype=torch.float64),
                               atol=1e-5, rtol=0)


def test_pattern_of_a_padded_generate_step_ignores_the_padding(ids_model):
    m = ids_model
    ids = torch.randint(1, VOCAB, (2, 6), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    ids[1, :2], mask[1, :2] = 0, 0  # the second prompt is left-padded by two
    with m.trace(sites="blocks.0.attn.hook_[qk]") as tr:
        m.generate({"input_ids": ids, "attention_mask": mask}, max_new_tokens=2)
    p = interp.attention_pattern(tr, 0)
    assert p.shape[-1] == 7
    assert torch.all(p[1, :, :, :2] == 0)
    torch.testing.assert_close(p.sum(-1), torch.ones(2, m.cfg.n_heads, 1))


# -- 2. empty prompts ------------------------------------------------------------------------------


def test_empty_prompts_are_named(model):
    with raises(model, BadInputError, "the prompt '' is empty: the tokenizer gives it no tokens; every prompt "
                                      "needs at least one token"):
        with model.trace(""):
            pass
    with raises(model, BadInputError, "the prompt '' is empty: the tokenizer gives it no tokens; every prompt "
                                      "needs at least one token"):
        model.generate("")
    with raises(model, BadInputError, "prompt 1 of 2 ('') is empty: the tokenizer gives it no tokens; every prompt "
                                      "needs at least one token"):
        model.generate(["The cat", ""])
    accepted = ("a str, a list of str, token ids (a list of ints, a list of equal-length lists of ints, or an integer "
                "tensor or array [pos] or [batch, pos]) or a dict with input_ids (and optionally attention_mask)")
    with raises(model, BadInputError, f"inputs is an empty list: give at least one prompt; inputs may be {accepted}"):
        model.to_tokens([])
    with raises(model, BadInputError, "the prompt is empty (0 token ids); every prompt needs at least one token"):
        model.to_tokens(torch.zeros(1, 0, dtype=torch.long))
    with raises(model, BadInputError, "the prompt is empty (0 token ids); every prompt needs at least one token"):
        model.run(torch.zeros(0, dtype=torch.long))
    with raises(model, BadInputError, "prompt 0 of 1 is empty (0 token ids); every prompt needs at least one token"):
        model.to_tokens([[]])
    with raises(model, BadInputError, "prompt 1 of 2 is empty (0 token ids); every prompt needs at least one token"):
        model.to_tokens([[3, 4], []])
    with raises(model, BadInputError, "prompt 1 of 2 has no real tokens: its attention_mask row is all 0"):
        model.run({"input_ids": torch.tensor([[3, 4], [0, 0]]), "attention_mask": torch.tensor([[1, 1], [0, 0]])})
    with raises(model, BadInputError, "inputs hold no prompts (a batch of 0); give at least one prompt"):
        model.to_tokens(torch.zeros(0, 4, dtype=torch.long))


def test_a_prompt_that_is_only_bos_counts():
    m = Model(build("llama"), word_tokenizer(bos=True), name="tiny-llama-bos")
    assert m.to_tokens("")["input_ids"].tolist() == [[1]]  # the tokenizer's BOS is a token
    assert len(m.generate(["The cat", ""], max_new_tokens=1)) == 2


# -- 3. what inputs are accepted -------------------------------------------------------------------


ACCEPTED = ("a str, a list of str, token ids (a list of ints, a list of equal-length lists of ints, or an integer "
            "tensor or array [pos] or [batch, pos]) or a dict with input_ids (and optionally attention_mask)")


@pytest.mark.parametrize(("inputs", "message"), [
    (12345, f"inputs must be {ACCEPTED}; got int 12345"),
    (3.5, f"inputs must be {ACCEPTED}; got float 3.5"),
    ([1.5], f"token ids must be integers, got float 1.5; inputs may be {ACCEPTED}"),
    ([3, "cat"], f"token ids must be integers, got str 'cat'; inputs may be {ACCEPTED}"),
    (["The cat", 3], "a list of prompts must hold only str, but item 1 is int 3"),
    (b"The cat", f"inputs must be {ACCEPTED}; got bytes b'The cat'"),
    ({"ids": [1, 2]}, "a dict input needs input_ids (and optionally attention_mask); got keys ['ids']"),
    (torch.ones(1, 3), f"token ids must be integers, got a torch.float32 tensor; inputs may be {ACCEPTED}"),
    (torch.ones(1, 2, 3, dtype=torch.long), "token ids must be [pos] or [batch, pos], got a tensor of shape (1, 2, 3)"),
    ([[3, 4, 5], [3, 4]], "token ids rows have different lengths [3, 2]; pass rows of one length, or a dict with "
                          "left-padded input_ids and an attention_mask"),
    ({"input_ids": [[3, 4]], "attention_mask": [[1, 1, 1]]}, "attention_mask has shape (1, 3) but input_ids (1, 2); "
                                                             "they must match"),
])
def test_inputs_of_the_wrong_kind(model, inputs, message):
    with raises(model, BadInputError, message):
        with model.trace(inputs):
            pass


def test_nonsense_objects_are_named(model):
    with no_forward(model), pytest.raises(BadInputError, match=r"^inputs must be a str, .*; got object <object object"):
        model.run(object())


def test_token_ids_outside_the_vocabulary(ids_model):
    with raises(ids_model, OutOfRangeError, "token id 500 is out of range: valid token ids are 0..127; prompt 0, "
                                            "position 1; tiny-llama has a vocabulary of 128"):
        ids_model.run([3, 500, 4])
    with raises(ids_model, OutOfRangeError, "token id -1 is out of range: valid token ids are 0..127; prompt 0, "
                                            "position 0; tiny-llama has a vocabulary of 128"):
        ids_model.run([-1, 5])


def test_trace_positions_are_checked_before_the_forward(ids_model):
    m = ids_model
    for p in (100, -4):
        with raises(m, OutOfRangeError, f"position {p} is out of range: valid positions are 0..2; trace(positions=...): "
                                        "the input has 3 tokens (negative positions count from the end)"):
            with m.trace(IDS, sites="blocks.0.hook_resid_post", positions=[p]):
                pass
    with raises(m, BadInputError, "positions must be an int, a list of ints (negative ones count from the end) or a "
                                  "slice, got str 'last'"):
        with m.trace(IDS, sites="blocks.0.hook_resid_post", positions="last"):
            pass
    with m.trace(IDS, sites="blocks.0.hook_resid_post", positions=[-3, 2]) as tr:
        pass
    assert tr["blocks.0.hook_resid_post"].shape == (1, 2, m.cfg.d_model)
    with m.trace(IDS, sites="blocks.0.hook_resid_post", positions=slice(1, 100)) as tr:
        pass
    assert tr["blocks.0.hook_resid_post"].shape == (1, 2, m.cfg.d_model)
    # Without inputs the length is known only when the forward runs: the same error then.
    with pytest.raises(OutOfRangeError, match=r"^position 5 is out of range: valid positions are 0..2; "
                                              r"blocks.0.hook_resid_post passed 3 position\(s\)"):
        with m.trace(sites="blocks.0.hook_resid_post", positions=[5]):
            m.hf(input_ids=IDS)


# -- 4. interventions that do not fit their site ---------------------------------------------------


@pytest.mark.parametrize(("site", "make", "message"), [
    ("blocks.0.hook_resid_post", lambda: iv.add(torch.ones(100)),
     "add at blocks.0.hook_resid_post: value has 100 elements in its last dimension but the site has 64 (d_model)"),
    ("blocks.0.hook_resid_post", lambda: iv.set_value(torch.ones(100)),
     "set_value at blocks.0.hook_resid_post: value has 100 elements in its last dimension but the site has 64 "
     "(d_model)"),
    ("blocks.1.mlp.hook_post", lambda: iv.mean_ablate(torch.zeros(64)),
     "mean_ablate at blocks.1.mlp.hook_post: mean has 64 elements in its last dimension but the site has 96 (d_mlp)"),
    ("blocks.1.attn.hook_z", lambda: iv.mean_ablate(torch.zeros(3, 16)),
     "mean_ablate at blocks.1.attn.hook_z: mean of shape (3, 16) does not fit the site's [batch, pos, n_heads=4, "
     "d_head=16]: its dimension -2 has 3 elements but the site's n_heads axis has 4"),
    ("blocks.0.hook_resid_pre", lambda: iv.scale(torch.ones(2, 1, 1, 64)),
     "scale at blocks.0.hook_resid_pre: factor has 4 dimensions (2, 1, 1, 64) but the site holds [batch, pos, "
     "d_model=64]"),
    ("blocks.0.hook_resid_post", lambda: iv.patch(torch.zeros(1, 3, 32)),
     "patch at blocks.0.hook_resid_post: the source has 32 elements in its last dimension but the site has 64 "
     "(d_model)"),
    ("blocks.0.attn.hook_k", lambda: iv.patch(torch.zeros(1, 3, 4, 16)),
     "patch at blocks.0.attn.hook_k: the source of shape (1, 3, 4, 16) does not fit the site's [batch, pos, "
     "n_kv_heads=2, d_head=16]: its dimension -2 has 4 elements but the site's n_kv_heads axis has 2"),
    ("blocks.2.hook_resid_post", lambda: steer(torch.ones(100), value=1.0),
     "steer at blocks.2.hook_resid_post: direction has 100 elements in its last dimension but the site has 64 "
     "(d_model)"),
    ("logits", lambda: iv.add(torch.ones(64)),
     "add at logits: value has 64 elements in its last dimension but the site has 128 (d_vocab)"),
])
def test_intervention_width_is_checked_before_any_run(ids_model, site, make, message):
    m = ids_model
    with raises(m, BadInputError, message):
        m.run(IDS, interventions={site: make()})
    with raises(m, BadInputError, message):
        m.generate(IDS, max_new_tokens=2, interventions={site: make()})
    with raises(m, BadInputError, message):  # also without inputs: the site's width is known
        with m.trace(interventions={site: make()}):
            pass


def test_patch_from_a_trace_without_the_site(ids_model):
    m = ids_model
    with m.trace(IDS, sites="blocks.1.hook_resid_post") as source:
        pass
    with raises(m, BadInputError, "patch at blocks.0.hook_resid_post: the source trace did not capture "
                                  "blocks.0.hook_resid_post (it captured blocks.1.hook_resid_post); capture it in the "
                                  "source run with sites="):
        m.run(IDS, interventions={"blocks.0.hook_resid_post": iv.patch(source)})
    with pytest.raises(BadInputError, match="^patch at blocks.1.hook_resid_post: the source has shape \\(1, 3, 64\\) "
                                            "but the run has \\(1, 4, 64\\); patch from a run of the same batch"):
        m.run(torch.tensor([[1, 2, 3, 4]]), interventions={"blocks.1.hook_resid_post": iv.patch(source)})


@pytest.mark.parametrize(("site", "make", "message"), [
    ("blocks.0.attn.hook_z", lambda: iv.zero(heads=[7]),
     "head 7 is out of range: valid heads are 0..3; zero at blocks.0.attn.hook_z: heads= selects on the site's "
     "n_heads axis"),
    ("blocks.0.attn.hook_v", lambda: iv.zero(heads=[2]),
     "kv head 2 is out of range: valid kv heads are 0..1; zero at blocks.0.attn.hook_v: heads= selects on the "
     "site's n_kv_heads axis"),
    ("blocks.0.mlp.hook_post", lambda: iv.set_value(1.0, units=[96]),
     "unit 96 is out of range: valid units are 0..95; set_value at blocks.0.mlp.hook_post: units= selects on the "
     "site's last axis (d_mlp)"),
    ("blocks.0.hook_resid_post", lambda: iv.add(1.0, positions=[3]),
     "position 3 is out of range: valid positions are 0..2; add at blocks.0.hook_resid_post: positions= selects on "
     "the position axis (3 tokens; negative positions count from the end)"),
    ("blocks.0.hook_resid_post", lambda: iv.add(1.0, positions=[-4]),
     "position -4 is out of range: valid positions are 0..2; add at blocks.0.hook_resid_post: positions= selects on "
     "the position axis (3 tokens; negative positions count from the end)"),
])
def test_selections_out_of_range_name_the_axis(ids_model, site, make, message):
    with raises(ids_model, OutOfRangeError, message):
        ids_model.run(IDS, interventions={site: make()})


def test_selection_errors_of_other_kinds(ids_model):
    m = ids_model
    with raises(m, BadInputError, "zero at blocks.0.hook_resid_pre: heads= needs a per-head site "
                                  "(hook_q/k/v/z/result), not 'blocks.0.hook_resid_pre'"):
        m.run(IDS, interventions={"blocks.0.hook_resid_pre": iv.zero(heads=[0])})
    with pytest.raises(BadInputError, match=r"^zero: heads= must be an int, a list of ints or a slice, got 1.5$"):
        iv.zero(heads=1.5)
    with pytest.raises(BadInputError, match=r"^add: positions= must be an int, a list of ints or a slice, got "
                                            r"\['last'\]$"):
        iv.add(1.0, positions=["last"])
    with raises(m, BadInputError, "interventions['blocks.0.hook_resid_pre'] must be an intervention "
                                  "(interp.core.interventions) or a function (value, site) -> value, got float 3.0"):
        m.run(IDS, interventions={"blocks.0.hook_resid_pre": 3.0})
    with raises(m, BadInputError, "reduce['blocks.0.hook_resid_pre'] must be a function of the site's tensor, "
                                  "got str 'mean'"):
        with m.trace(IDS, reduce={"blocks.0.hook_resid_pre": "mean"}):
            pass


def test_generate_checks_positions_against_every_step(ids_model):
    m = ids_model
    prompt = torch.randint(1, VOCAB, (1, 8), generator=torch.Generator().manual_seed(2))
    with raises(m, OutOfRangeError, "position 3 is out of range: valid positions are 0..0; add at "
                                    "blocks.0.hook_resid_post: positions= selects on the position axis (1 token; "
                                    "negative positions count from the end) at each generate step after the prompt, "
                                    "which passes only the new token: -1 (or 0) fits every step, a slice such as "
                                    "slice(3, None) acts on the prompt only"):
        m.generate(prompt, max_new_tokens=3, interventions={"blocks.0.hook_resid_post": iv.add(1.0, positions=[3])})
    # One new token is one forward over the prompt: position 3 is fine then, and so are -1 and slices.
    m.generate(prompt, max_new_tokens=1, interventions={"blocks.0.hook_resid_post": iv.add(1.0, positions=[3])})
    m.generate(prompt, max_new_tokens=3, interventions={"blocks.0.hook_resid_post": iv.add(1.0, positions=[-1])})
    m.generate(prompt, max_new_tokens=3, interventions={"blocks.0.hook_resid_post": iv.add(1.0, positions=slice(3, None))})
    # Keys and values hold every cached position at each step.
    m.generate(prompt, max_new_tokens=3, interventions={"blocks.0.attn.hook_k": iv.scale(2.0, positions=[3])})
    with raises(m, BadInputError, "max_new_tokens must be an integer of at least 1, got 0"):
        m.generate(prompt, max_new_tokens=0)


# -- 5. NaN and infinities -------------------------------------------------------------------------


@pytest.mark.parametrize(("make", "message"), [
    (lambda: iv.set_value(float("nan")), "set_value: value must be finite, got nan"),
    (lambda: iv.add(float("inf")), "add: value must be finite, got inf"),
    (lambda: iv.scale(float("nan")), "scale: factor must be finite, got nan"),
    (lambda: iv.add(torch.tensor([1.0, float("-inf"), 2.0])),
     "add: value must be finite, got a tensor with 1 non-finite entry (first: -inf at index (1,))"),
    (lambda: iv.mean_ablate(torch.full((2, 3), float("nan"))),
     "mean_ablate: mean must be finite, got a tensor with 6 non-finite entries (first: nan at index (0, 0))"),
    (lambda: iv.set_value("1.0"), "set_value: value must be a number or a tensor, got '1.0'"),
    (lambda: iv.patch([1.0, 2.0]), "patch: source must be a Trace that captured the site or a tensor, got list"),
    (lambda: steer(torch.ones(64), value=float("nan")), "steer: value= must be finite, got nan"),
    (lambda: steer(torch.ones(64), add=float("inf")), "steer: add= must be finite, got inf"),
    (lambda: steer(torch.tensor([1.0, float("nan")]), value=1.0),
     "steer: direction must be finite, got a tensor with 1 non-finite entry (first: nan at index (1,))"),
    (lambda: steer(torch.zeros(64), value=1.0), "steer: direction is the zero vector, which has no direction"),
    (lambda: steer(torch.ones(2, 64), value=1.0), "steer: direction must be a vector [d], got shape (2, 64)"),
    (lambda: steer(torch.ones(64)), "steer: give exactly one of value= (set the projection) or add= (shift along "
                                    "the direction)"),
])
def test_non_finite_values_raise_at_construction(make, message):
    with pytest.raises(BadInputError, match="^" + re.escape(message) + "$"):
        make()


def test_neuron_clamp_and_steer_values(model):
    with pytest.raises(BadInputError, match=r"^clamp: value must be finite, got nan$"):
        N.clamp(model, 0, 3, float("nan"))
    with raises(model, BadInputError, "clamp_effect: value must be finite, got inf"):
        N.clamp_effect(model, 0, 3, float("inf"), "The cat sat on the", "dog")
    with raises(model, BadInputError, "the prompt '' is empty: the tokenizer gives it no tokens; every prompt "
                                      "needs at least one token"):
        N.clamp_effect(model, 0, 3, 5.0, "", "dog")
    with raises(model, BadInputError, "clamp: value must be a number, got '5'"):
        N.clamp(model, 0, 3, "5")


# -- 7. logit_diff with token strings ---------------------------------------------------------------


def test_logit_diff_takes_single_token_strings(model):
    clean, corrupt = "The cat sat on the", "The dog sat on the"
    paris, rome = model.tokenizer.convert_tokens_to_ids(["Paris", "Rome"])
    by_text = activation_patching(model, clean, corrupt, logit_diff(" Paris", "Rome"), sites=["resid_pre"],
                                  progress=False)
    by_id = activation_patching(model, clean, corrupt, logit_diff(paris, rome), sites=["resid_pre"], progress=False)
    assert by_text.df.equals(by_id.df)
    logits = model.run(clean)
    bound = logit_diff(" Paris", "Rome", model=model)
    assert float(bound(logits)) == pytest.approx(float(logits[0, -1, paris] - logits[0, -1, rome]))


def test_logit_diff_errors_come_before_any_forward(model):
    clean, corrupt = "The cat sat on the", "The dog sat on the"
    split = ("logit_diff(' Paris Rome', 'cat'): good token ' Paris Rome' is 2 tokens ['Paris', 'Rome'] of tiny-llama's "
             "tokenizer; pass a string that is exactly one token, or a token id")
    with raises(model, BadInputError, split):
        activation_patching(model, clean, corrupt, logit_diff(" Paris Rome", "cat"), progress=False)
    with raises(model, BadInputError, split):
        attribution_patching(model, clean, corrupt, logit_diff(" Paris Rome", "cat"))
    with raises(model, BadInputError, split):
        ablation_scan(model, clean, logit_diff(" Paris Rome", "cat"), method="zero", progress=False)
    with raises(model, BadInputError, split):
        logit_diff(" Paris Rome", "cat", model=model)
    with raises(model, BadInputError, "logit_diff('Paris', ''): bad token '' is no token of tiny-llama's tokenizer; "
                                      "pass a string that is exactly one token, or a token id"):
        logit_diff("Paris", "", model=model)
    with raises(model, OutOfRangeError, "token id 1000 is out of range: valid token ids are 0..127; "
                                        "logit_diff(1000, 3): good token; tiny-llama has a vocabulary of 128"):
        activation_patching(model, clean, corrupt, logit_diff(1000, 3), progress=False)
    with raises(model, BadInputError, "logit_diff(['Paris', 'Rome', 'cat'], 'dog'): good has 3 tokens but the inputs "
                                      "have 1 item; give one token for all items or one per item"):
        activation_patching(model, clean, corrupt, logit_diff(["Paris", "Rome", "cat"], "dog"), progress=False)
    with raises(model, OutOfRangeError, "position 7 is out of range: valid positions are 0..4; "
                                        "logit_diff('Paris', 'Rome'): the metric reads logits at 5 position(s)"):
        activation_patching(model, clean, corrupt, logit_diff("Paris", "Rome", position=7), progress=False)
    with raises(model, OutOfRangeError, "position -2 is out of range: valid positions are 0..0; "
                                        "logit_diff('Paris', 'Rome'): the metric reads logits at 1 position(s)"):
        activation_patching(model, clean, corrupt, logit_diff("Paris", "Rome", position=-2), logits_to_keep=1,
                            progress=False)
    with pytest.raises(BadInputError, match=r"^logit_diff: good must be token ids \(ints\) or strings that are one "
                                            r"token each, got 1.5 in \[1.5\]$"):
        logit_diff([1.5], 3)
    unbound = logit_diff("Paris", "Rome")
    with pytest.raises(BadInputError, match=re.escape(
            "logit_diff('Paris', 'Rome') names tokens as strings, which need the model's tokenizer: pass model= to "
            "logit_diff, or use it in activation_patching, attribution_patching or ablation_scan, which look the "
            "strings up before any forward pass")):
        unbound(model.run(clean))


def test_patching_positions_and_settings_are_checked_before_any_forward(ids_model):
    m = ids_model
    clean, corrupt = torch.tensor([[3, 4, 5]]), torch.tensor([[3, 6, 5]])
    with raises(m, OutOfRangeError, "position 100 is out of range: valid positions are 0..2; "
                                    "activation_patching(positions=...): the inputs have 3 tokens (negative positions "
                                    "count from the end)"):
        activation_patching(m, clean, corrupt, logit_diff(1, 2), sites=["resid_pre"], positions=[100], progress=False)
    with raises(m, BadInputError, "activation_patching: batch_size must be an integer of at least 1, got 0"):
        activation_patching(m, clean, corrupt, logit_diff(1, 2), batch_size=0, progress=False)
    with raises(m, UnknownNameError, "unknown positions 'some'; valid positions: all, each, a list of positions"):
        activation_patching(m, clean, corrupt, logit_diff(1, 2), positions="some", progress=False)
    with raises(m, BadInputError, "resample ablation without a reference needs a batch of at least 2 inputs"):
        ablation_scan(m, clean, logit_diff(1, 2), method="resample", progress=False)
    with raises(m, UnknownNameError, "unknown ablation method 'median'; valid ablation methods: zero, mean, resample"):
        ablation_scan(m, clean, logit_diff(1, 2), method="median", progress=False)


# -- plural kinds in messages ------------------------------------------------------------------------


def test_plural_kinds_read_naturally():
    assert str(UnknownNameError("weights", "x", ["up"], plural="weights")) == "unknown weights 'x'; valid weights: up"
    assert str(UnknownNameError("site", "x", ["a"])) == "unknown site 'x'; valid sites: a"
    assert str(OutOfRangeError("layer", 9, 3)) == "layer 9 is out of range: valid layers are 0..2"
    assert str(OutOfRangeError("kv head", 4, 2, hint="h")) == "kv head 4 is out of range: valid kv heads are 0..1; h"
    assert issubclass(BadInputError, InterpError) and issubclass(BadInputError, ValueError)
