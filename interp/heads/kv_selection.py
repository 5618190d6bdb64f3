"""Which kv heads need a full cache: two rules measured on the model itself, beside the scans' scores.

- ``masking_effect``: stream one kv head at a time (sink + window, through ``compressed``'s
  mask) and measure how much log-probability the answers of needle tests lose; the heads whose
  streaming costs most keep their cache (the masking experiment of Wu et al., per kv head).
- ``train_gates``: DuoAttention's optimisation (Xiao et al., 2024). Every kv head gets a gate
  ``a`` in [0, 1] and its query heads output ``a * full attention + (1 - a) * streaming
  attention``; with the model frozen, the gates are trained on synthetic passkey prompts to keep
  the final hidden states of the passkey's answer while an L1 penalty pushes them to 0. The heads
  whose gates stay high keep their cache.

Both return a float ``[layers, kv_heads]`` array (higher: keep full; NaN on sliding-window layers,
which keep their own window), which ``keep_top`` turns into the bool pattern ``headwise_cache``
and ``compressed`` take.

>>> import interp
>>> from interp.heads.kv_selection import keep_top, train_gates
>>> model = interp.load("smollm2-135m")                                 # doctest: +SKIP
>>> gates = train_gates(model, steps=40)                                # doctest: +SKIP
>>> cache = interp.heads.headwise_cache(model, keep_top(gates, 0.25))   # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from transformers import AttentionInterface
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from interp.core.attention import PREFIX, base_implementation
from interp.core.inputs import left_pad
from interp.core.kv_cache import run_cached
from interp.core.masks import layer_visible
from interp.core.model import Model
from interp.errors import BadInputError, real_number, whole_number
from interp.heads.compression import SINK, WINDOW, compressed, sliding_windows, streaming_visible
from interp.heads.retrieval import NeedleTest, build_test, haystack_ids
from interp.heads.table import keep_top  # noqa: F401 (re-exported: the rules' values become a pattern through it)
from interp.logs import progress

GATE_KEY = "_interp_kv_gate"  # an attention module's gates while train_gates runs: [kv_heads] in [0, 1]
GATED = PREFIX + "gated_sdpa"


Example = tuple[Sequence[int], Sequence[int]]  # (prompt token ids, answer token ids)


def as_examples(model: Model, tests: Sequence[NeedleTest | Example]) -> list[tuple[list[int], list[int]]]:
    """Needle tests (``build_test``) or ``(prompt ids, answer ids)`` pairs as pairs of id lists;
    a needle test's answer is tokenised as it would follow the prompt (after a space)."""
    out = []
    for t in tests:
        if isinstance(t, NeedleTest):
            prompt = t.prompt_ids[0].tolist()
            answer = model.tokenizer(" " + t.answer.strip(), add_special_tokens=False)["input_ids"]
        else:
            try:
                prompt, answer = [int(i) for i in t[0]], [int(i) for i in t[1]]
            except (TypeError, ValueError, IndexError) as exc:
                raise BadInputError(f"an example must be a NeedleTest or a (prompt ids, answer ids) pair: {exc}") from exc
        if not prompt or not answer:
            raise BadInputError("an example needs at least one prompt token and one answer token")
        out.append((prompt, answer))
    return out


def _answer_batch(examples: list[tuple[list[int], list[int]]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Each prompt followed by its answer, left-padded into one batch, and its attention mask."""
    return left_pad([p + a for p, a in examples], pad)


def _pad_id(model: Model) -> int:
    pad = getattr(model.tokenizer, "pad_token_id", None)
    return int(pad) if pad is not None else 0


def _answer_logprob(model: Model, ids: torch.Tensor, mask: torch.Tensor, answers: list[list[int]]) -> np.ndarray:
    """Mean log-probability per answer token of each row (teacher-forced)."""
    k = max(map(len, answers)) + 1
    with torch.no_grad():
        out, _ = run_cached(model.hf, None, input_ids=ids, attention_mask=mask, logits_to_keep=k)
    logp = torch.log_softmax(out.logits.float(), -1)  # [b, k, vocab]: the last k positions
    scores = []
    for row, answer in enumerate(answers):
        n = len(answer)
        # the logits at position -n-1 .. -2 predict the answer's n tokens
        pred = logp[row, k - n - 1 : k - 1]
        scores.append(float(pred.gather(-1, torch.tensor(answer)[:, None]).mean()))
    return np.array(scores)


def masking_effect(model: Model, tests: Sequence[NeedleTest | Example], *, sink: int = SINK, window: int = WINDOW,
                   progress_bar: bool = True) -> np.ndarray:
    """How much each kv head's full cache matters to needle answers: the mean drop in the
    answers' log-probability (nats per answer token, teacher-forced) when that kv head alone keeps
    only ``sink`` + ``window`` keys.

    Args:
        model: an ``interp.Model``.
        tests: needle tests (``interp.heads.retrieval.build_test``) or ``(prompt ids, answer
            ids)`` pairs, each prompt longer than ``sink + window`` tokens so that streaming drops
            keys; run as one batch per kv head.
        sink, window: the streaming cache, as ``compressed`` takes them.
        progress_bar: a bar over the kv heads.

    Returns:
        float ``[layers, kv_heads]``: higher needs its cache more; NaN on sliding-window layers.

    >>> effect = masking_effect(model, tests)                           # doctest: +SKIP
    """
    if not tests:
        raise BadInputError("masking_effect needs at least one needle test")
    sink, window = whole_number(sink, 0, "sink"), whole_number(window, 1, "window")
    examples = as_examples(model, tests)
    short = [len(p) for p, _ in examples if len(p) <= sink + window]
    if short:
        raise BadInputError(f"tests of {short[0]} tokens keep every key under a sink of {sink} and a window of "
                            f"{window}; masking_effect needs tests longer than {sink + window} tokens")
    ids, mask = _answer_batch(examples, _pad_id(model))
    answers = [a for _, a in examples]
    base = _answer_logprob(model, ids, mask, answers)
    layers, kv = model.cfg.n_layers, model.cfg.n_kv_heads
    effect = np.full((layers, kv), np.nan)
    bounded = sliding_windows(model)
    heads = [(la, h) for la in range(layers) if la not in bounded for h in range(kv)]
    for layer, head in progress(heads, "masking effect (kv heads)", progress_bar):
        keep = np.ones((layers, kv), dtype=bool)
        keep[layer, head] = False
        with compressed(model, keep, sink=sink, window=window):
            effect[layer, head] = float((base - _answer_logprob(model, ids, mask, answers)).mean())
    return effect


# -- DuoAttention's gates ----------------------------------------------------------------------------

def _gated_attention(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                     attention_mask: Any, **kwargs: Any) -> tuple[torch.Tensor, None]:
    """SDPA that mixes, per kv head, full attention and sink + window attention by the module's gates."""
    sdpa = ALL_ATTENTION_FUNCTIONS["sdpa"]
    gate = module.__dict__.get(GATE_KEY)
    full = sdpa(module, query, key, value, attention_mask, **kwargs)[0]  # [b, q, heads, d]
    if gate is None:
        return full, None
    n_q, n_k = query.shape[2], key.shape[2]
    allowed = layer_visible(attention_mask, n_q, n_k, device=query.device)
    sink, window = module.__dict__[GATE_KEY + "_cache"]
    stream = sdpa(module, query, key, value, streaming_visible(allowed, n_q, n_k, sink, window), **kwargs)[0]
    g = gate.repeat_interleave(query.shape[1] // key.shape[1])[None, None, :, None].to(full.dtype)
    return g * full + (1 - g) * stream, None


AttentionInterface.register(GATED, _gated_attention)
AttentionMaskInterface.register(GATED, ALL_MASK_ATTENTION_FUNCTIONS["sdpa"])


@contextlib.contextmanager
def _gated(model: Model, gates: torch.Tensor, sink: int, window: int) -> Iterator[None]:
    """The model attends through ``_gated_attention`` with ``gates`` (``[layers, kv_heads]``) on
    its unbounded layers; its implementation and parameters' ``requires_grad`` come back after."""
    before = model.hf.config._attn_implementation
    grads = [p.requires_grad for p in model.hf.parameters()]
    bounded = sliding_windows(model)
    modules = [model.attn_module(la) for la in range(model.cfg.n_layers)]
    try:
        for p in model.hf.parameters():
            p.requires_grad_(False)
        model.hf.set_attn_implementation(GATED)
        for layer, module in enumerate(modules):
            if layer not in bounded:
                module.__dict__[GATE_KEY] = gates[layer]
                module.__dict__[GATE_KEY + "_cache"] = (sink, window)
        yield
    finally:
        for module in modules:
            module.__dict__.pop(GATE_KEY, None)
            module.__dict__.pop(GATE_KEY + "_cache", None)
        model.hf.set_attn_implementation(before)
        for p, g in zip(model.hf.parameters(), grads, strict=True):
            p.requires_grad_(g)


def passkey_test(model: Model, rng: np.random.Generator, length: int, hay: Sequence[int]) -> NeedleTest:
    """A synthetic passkey prompt (DuoAttention's training data): a random five-digit key at a
    random depth in the first 70% of ``length`` tokens of ``hay``, from a random offset.

    Args:
        model: the model whose tokenizer and prompt format build the test.
        rng: draws the key, the depth and the offset.
        length: the prompt's length in tokens.
        hay: the filler text's token ids (``haystack_ids``).

    Returns:
        a ``NeedleTest`` whose answer is the key.
    """
    key = str(int(rng.integers(10000, 100000)))
    needle = {"needle": f"The pass key is {key}. Remember it. {key} is the pass key.",
              "question": "What is the pass key?", "answer": key}
    start = int(rng.integers(0, max(1, len(hay) - 2 * length)))
    return build_test(model, needle, length, float(rng.uniform(0.05, 0.7)), hay=hay[start:])


def train_gates(model: Model, *, steps: int = 60, length: int = 800, lr: float = 0.05, l1: float = 0.05,
                sink: int = SINK, window: int = WINDOW, seed: int = 0, examples: Sequence[NeedleTest | Example] | None = None,
                progress_bar: bool = True) -> np.ndarray:
    """DuoAttention's gates for every kv head outside sliding-window layers, trained on synthetic
    passkey prompts in the shipped haystack text with the model frozen.

    Each step builds one passkey prompt of ``length`` tokens followed by its answer, runs it with
    full attention (the target) and with the gated mix, and takes an Adam step on the mean squared
    error of the final hidden states over the answer's positions (divided by the target's mean
    square) plus ``l1`` times the mean gate; gates start at 1 and are clipped to [0, 1].

    Args:
        model: an ``interp.Model`` on the SDPA or eager path.
        steps, length, lr, l1: the optimisation (DuoAttention: 2,000 steps at lr 0.02, 0.05 L1).
        sink, window: the streaming attention the gates mix in.
        seed: the passkeys, their depths and the text offsets.
        examples: train on these instead (needle tests or ``(prompt ids, answer ids)`` pairs, one
            per step in turn); ``length`` is then not used.
        progress_bar: a bar over the steps.

    Returns:
        float ``[layers, kv_heads]`` gates: higher needs full attention more; NaN on
        sliding-window layers.

    >>> gates = train_gates(model, steps=40)                               # doctest: +SKIP
    """
    steps, length = whole_number(steps, 1, "steps"), whole_number(length, 1, "length")
    sink, window = whole_number(sink, 0, "sink"), whole_number(window, 1, "window")
    lr, l1 = real_number(lr, "lr", 0), real_number(l1, "l1", 0)
    given = as_examples(model, examples) if examples is not None else None
    if given is not None and not given:
        raise BadInputError("train_gates got an empty list of examples")
    if given is None and length <= sink + window + 16:
        raise BadInputError(f"length {length} leaves a streaming head every key (sink {sink} + window {window}); "
                            f"use a length above {sink + window + 16}")
    if base_implementation(model.hf) != "sdpa":
        raise BadInputError("train_gates mixes two SDPA calls; load the model on the SDPA path (the default)")
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    hay = haystack_ids(model) if given is None else []
    layers, kv = model.cfg.n_layers, model.cfg.n_kv_heads
    bounded = sliding_windows(model)
    free = torch.tensor([la not in bounded for la in range(layers)])
    gates = torch.ones(layers, kv, requires_grad=True)
    opt = torch.optim.Adam([gates], lr=lr)
    for step in progress(range(steps), "DuoAttention gates", progress_bar):
        prompt, answer = given[step % len(given)] if given else as_examples(model, [passkey_test(model, rng, length, hay)])[0]
        ids = torch.tensor([prompt + answer])
        n = len(answer) + 1  # the answer's positions and the one that predicts its first token
        with torch.no_grad():
            target = model.hf(input_ids=ids, output_hidden_states=True, logits_to_keep=1).hidden_states[-1][:, -n:]
        with _gated(model, gates, sink, window):
            got = model.hf(input_ids=ids, output_hidden_states=True, logits_to_keep=1).hidden_states[-1][:, -n:]
        loss = (got - target).pow(2).mean() / target.pow(2).mean() + l1 * gates[free].mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        with torch.no_grad():
            gates.clamp_(0, 1)
    out = gates.detach().numpy().astype(float)
    out[~free.numpy()] = np.nan
    return out
