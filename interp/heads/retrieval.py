"""Retrieval heads (Wu et al. 2024, "Retrieval Head Mechanistically Explains Long-Context Factuality").

Needle-in-a-haystack tests: a needle sentence is placed at several depths of haystacks of
several lengths (the shipped public-domain text), the model answers a question about it by
greedy decoding, and at every decoding step each head's arg-max key over the prompt is read
from the attention kernel. A head copies a token when that key lies in the answer span and
holds the very token being generated; its score in a test is the number of copies divided by
the span length, averaged over the tests whose answer is recalled (ROUGE-1 recall > 0.5).
Heads above the threshold (0.1) are retrieval heads. The masking check zeroes the queries of
chosen heads during decoding only, so they attend uniformly, as the paper does; scoring and
the masking check decode the same way (``greedy_decode``), so every answer token, the first
included, comes from a decoding step with the masked heads masked.
"""

from __future__ import annotations

import re
import weakref
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from interp.corpus import text as corpus_text
from interp.errors import InterpError, PromptTooLongError
from interp.heads.names import RetrievalSettings, default_needles  # noqa: F401 (re-exported)
from interp.kernels import decode_argmax
from interp.kv_cache import fork, run_cached
from interp.model import Model


@dataclass
class NeedleTest:
    prompt_ids: torch.Tensor  # [1, n]
    span: tuple[int, int]  # answer tokens [start, end) in the prompt
    answer: str
    length: int
    depth: float
    needle: int


def rouge1_recall(reference: str, response: str) -> float:
    """Unigram recall of ``reference`` words in ``response`` (lower-cased, word tokens, with counts)."""
    ref = Counter(re.findall(r"\w+", reference.lower()))
    got = Counter(re.findall(r"\w+", response.lower()))
    total = sum(ref.values())
    return sum(min(c, got[w]) for w, c in ref.items()) / total if total else 0.0


def _prompt(model: Model, context: str, question: str) -> tuple[str, bool]:
    """The paper's prompt, in the model's chat template where it has one."""
    user = f"{context}\n\nBased on the content of the book, Question: {question}\nAnswer:"
    if getattr(model.tokenizer, "chat_template", None):
        messages = [{"role": "user", "content": user}]
        return model.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False), False
    return user, True


def haystack_ids(model: Model, haystack: str = "alice") -> list[int]:
    """The shipped haystack text as token ids (no special tokens)."""
    return model.tokenizer(corpus_text(haystack), add_special_tokens=False)["input_ids"]


def check_needle(needle: Any) -> None:
    """A needle is a dict with ``needle``, ``question`` and ``answer`` strings, the answer a
    substring of the needle; checked before anything is tokenised."""
    keys = ("needle", "question", "answer")
    if not isinstance(needle, dict) or any(not isinstance(needle.get(key), str) or not needle[key] for key in keys):
        raise InterpError(f"a needle must be a dict with non-empty strings {', '.join(keys)}; got {needle!r}")
    if needle["answer"] not in needle["needle"]:
        raise InterpError(f"the answer {needle['answer']!r} is not a substring of its needle {needle['needle']!r}")


def build_test(model: Model, needle: dict[str, str], length: int, depth: float, index: int = 0,
               haystack: str = "alice", hay: Sequence[int] | None = None) -> NeedleTest:
    """A prompt of about ``length`` tokens with the needle at ``depth`` (0: start, 1: end).

    ``hay``: the haystack's token ids, if already tokenised (``haystack_ids``). Raises
    ``InterpError`` when the answer cannot be located among the prompt's tokens.
    """
    tok = model.tokenizer
    if length > model.cfg.n_ctx:
        raise PromptTooLongError(f"haystack length {length} exceeds {model.name}'s context window of {model.cfg.n_ctx}")
    check_needle(needle)
    hay = list(hay) if hay is not None else haystack_ids(model, haystack)
    overhead = len(tok(_prompt(model, needle["needle"], needle["question"])[0], add_special_tokens=False)["input_ids"])
    budget = length - overhead - 1
    if budget <= 0 or budget > len(hay):
        raise PromptTooLongError(f"cannot build a {length}-token haystack (the needle and question take {overhead})")
    context = hay[:budget]
    cut = int(round(depth * budget))
    # Move the needle back to a sentence end, as the paper does.
    while 0 < cut < budget and not tok.decode(context[cut - 1 : cut]).rstrip().endswith((".", "!", "?")):
        cut -= 1
    before, after = tok.decode(context[:cut]), tok.decode(context[cut:])
    text = f"{before} {needle['needle']} {after}".strip()
    prompt, add_special = _prompt(model, text, needle["question"])
    try:
        enc = tok(prompt, add_special_tokens=add_special, return_offsets_mapping=True)
        ids, offsets = enc["input_ids"], enc["offset_mapping"]
    except (NotImplementedError, KeyError) as exc:
        raise InterpError(f"retrieval scores need a tokenizer with character offsets (a fast tokenizer); "
                          f"{model.name}'s has none") from exc
    start_char = prompt.find(needle["needle"])
    if start_char < 0:
        raise InterpError(f"the needle {needle['needle']!r} does not survive in the prompt text")
    a = needle["needle"].find(needle["answer"])
    lo, hi = start_char + a, start_char + a + len(needle["answer"])
    span = [i for i, (s, e) in enumerate(offsets) if s < hi and e > lo and s < e]
    if not span:
        raise InterpError(f"could not locate the answer {needle['answer']!r} among the prompt's tokens "
                          f"({model.name}'s tokenizer leaves no token on it)")
    return NeedleTest(torch.tensor([ids]), (span[0], span[-1] + 1), needle["answer"], length, depth, index)


def zero_queries_when_decoding(heads: list[int]) -> Callable:
    """An intervention on ``hook_q`` zeroing these heads' queries on decoding steps only."""

    def op(q: torch.Tensor, site: str) -> torch.Tensor:
        if q.shape[1] != 1:
            return q
        q = q.clone()
        q[:, :, heads] = 0
        return q

    return op


def zero_queries_by_row(masks: torch.Tensor) -> Callable:
    """``zero_queries_when_decoding`` for a batch of decoding rows: row ``r`` zeroes the queries
    of the heads where ``masks[r]`` (``[rows, n_heads]``, bool) is true."""

    def op(q: torch.Tensor, site: str) -> torch.Tensor:
        if q.shape[1] != 1:
            return q
        q = q.clone()
        q[masks.to(q.device)[:, None, :].expand(q.shape[:3])] = 0
        return q

    return op


def _one_logit(model: Model) -> dict[str, int]:
    # A prefill's logits are never read: skip the unembedding of every prompt position.
    import inspect

    return {"logits_to_keep": 1} if "logits_to_keep" in inspect.signature(model.hf.forward).parameters else {}


# Prefills of the masking check's tests kept from the scoring pass in this process (the masking
# check decodes its conditions from them instead of prefilling again), up to this many bytes.
KEEP_BYTES = 2 * 2**30
_kept: weakref.WeakKeyDictionary[Model, dict[str, tuple[torch.Tensor, Any]]] = weakref.WeakKeyDictionary()


def _cache_bytes(cache: Any) -> int:
    return sum(t.nelement() * t.element_size() for layer in getattr(cache, "layers", [])
               for t in (getattr(layer, "keys", None), getattr(layer, "values", None)) if isinstance(t, torch.Tensor))


def keep_prefill(model: Model, test: NeedleTest, cache: Any) -> None:
    """Keep a copy of ``test``'s prefill for the masking check, within ``KEEP_BYTES`` per model."""
    if cache is None:
        return
    kept = _kept.setdefault(model, {})
    used = sum(_cache_bytes(c) for _, c in kept.values())
    if used + _cache_bytes(cache) <= KEEP_BYTES:
        kept[test_key(test)] = (test.prompt_ids, fork(cache))


def forget_prefills(model: Model) -> None:
    """Drop the prefills kept for ``model`` (the masking check has run, or will not)."""
    _kept.pop(model, None)


def take_prefill(model: Model, test: NeedleTest) -> Any:
    """``test``'s prefill: the one kept by the scoring pass (removed from the store), else a new one."""
    ids, cache = _kept.get(model, {}).pop(test_key(test), (None, None))
    return cache if ids is not None and torch.equal(ids, test.prompt_ids) else prefill(model, test.prompt_ids)


def prefill(model: Model, prompt_ids: torch.Tensor) -> Any:
    """The key/value cache of every prompt token but the last (``None`` for a one-token prompt),
    from which ``greedy_decode`` starts; the masking check decodes several conditions from one."""
    ids = prompt_ids.reshape(1, -1).to(model.device)
    if ids.shape[1] < 2:
        return None
    with torch.no_grad():
        return run_cached(model.hf, input_ids=ids[:, :-1], **_one_logit(model))[1]


def greedy_decode(model: Model, prompt_ids: torch.Tensor, max_new_tokens: int, *,
                  interventions: dict | None = None, on_token: Callable[[int], None] | None = None,
                  cache: Any = None) -> list[int]:
    """Greedy decoding as in Wu et al.: the prompt except its last token is prefilled, then
    decoding starts from the last prompt token, so every generated token, the first included,
    comes from a one-token decoding step (where ``zero_queries_when_decoding`` masks heads and
    decode observers read the arg-max keys). Stops at EOS or a newline, which is not returned.
    ``on_token(token)`` runs after each generated token's step. ``cache``: a ``prefill`` of this
    prompt to start from (it is extended in place; pass a copy to reuse it), for interventions
    that act on decoding steps only. Retrieval scoring and the masking check both decode here."""
    return decode_rows(model, prompt_ids, max_new_tokens, 1, interventions=interventions, on_token=on_token,
                       cache=cache)[0]


def decode_rows(model: Model, prompt_ids: torch.Tensor, max_new_tokens: int, rows: int, *,
                interventions: dict | None = None, on_token: Callable[[int], None] | None = None,
                cache: Any = None) -> list[list[int]]:
    """``greedy_decode`` of one prompt in ``rows`` batch rows at once (``interventions`` may act
    on each row differently, e.g. ``zero_queries_by_row``); each row stops on its own. The rows
    share one prefill (``cache``, of batch 1, extended in place), and a decoding step of a few
    rows costs about what one row does, since it reads the same weights. ``on_token``: rows == 1 only.
    Row-wise results equal decoding each row alone up to the float rounding of batched products."""
    ids = prompt_ids.reshape(1, -1).to(model.device)
    eos = getattr(model.tokenizer, "eos_token_id", None)
    generated: list[list[int]] = [[] for _ in range(rows)]
    with model.trace(interventions=interventions), torch.no_grad():
        if cache is None and ids.shape[1] > 1:
            cache = run_cached(model.hf, input_ids=ids[:, :-1], **_one_logit(model))[1]
        if cache is not None and rows > 1:
            cache.batch_repeat_interleave(rows)
        nxt = ids[:, -1:].expand(rows, 1)
        running = [True] * rows  # finished rows decode on (their tokens unused): the batch keeps its shape
        for _ in range(max_new_tokens):
            out, cache = run_cached(model.hf, cache, input_ids=nxt)
            tokens = out.logits[:, -1].argmax(-1).tolist()
            for r, t in enumerate(tokens):
                if not running[r]:
                    continue
                if t == eos or "\n" in model.tokenizer.decode([t]):
                    running[r] = False
                    continue
                generated[r].append(t)
                if on_token is not None:
                    on_token(t)
            if not any(running):
                break
            nxt = torch.tensor([[t] for t in tokens], device=ids.device)
    return generated


def decode_with_argmax(model: Model, test: NeedleTest, max_new_tokens: int, interventions: dict | None = None,
                       cache: Any = None) -> tuple[list[int], list[torch.Tensor]]:
    """Greedy decoding (``greedy_decode``); for every generated token, each head's arg-max
    prompt key ``[layers, heads]`` (an absolute position) at the step that produced it.

    A decoding step needs only each head's arg-max key, so each layer computes that and nothing
    else (``decode_argmax``). A sliding-window layer's cache holds only its window, so its key
    indices are shifted to absolute positions."""
    argmax: dict[int, torch.Tensor] = {}
    position = [test.prompt_ids.shape[-1] - 1]  # the absolute position of the current query

    def observe(layer, q, k, spec, lse):
        if q.shape[2] != 1:
            return  # the prefill; every decoding step overwrites what is read here anyway
        idx = decode_argmax(q, k, scaling=spec.scaling, sliding_window=spec.sliding_window, softcap=spec.softcap)
        argmax[layer] = idx[0] + (position[0] + 1 - k.shape[2])

    per_step: list[torch.Tensor] = []

    def snapshot(token: int) -> None:
        per_step.append(torch.stack([argmax[layer] for layer in range(model.cfg.n_layers)]).cpu())
        position[0] += 1

    with model.trace(observe=observe):
        generated = greedy_decode(model, test.prompt_ids, max_new_tokens, interventions=interventions, on_token=snapshot,
                                  cache=cache)
    return generated, per_step


def copy_scores(prompt_ids: torch.Tensor, span: tuple[int, int], generated: list[int],
                argmax_per_step: list[torch.Tensor]) -> np.ndarray:
    """Per head: steps whose arg-max key is in the answer span and holds the generated token, / span length."""
    start, end = span
    prompt = prompt_ids.reshape(-1)
    score = np.zeros(tuple(argmax_per_step[0].shape)) if argmax_per_step else np.zeros((0, 0))
    for token, idx in zip(generated, argmax_per_step, strict=True):
        inside = (idx >= start) & (idx < end)
        copies = inside & (prompt[idx.clamp(0, len(prompt) - 1)] == token)
        score += copies.numpy()
    return score / (end - start)


@dataclass
class RetrievalResult:
    scores: np.ndarray  # [layers, heads], NaN if no test was recalled
    tests: list[dict[str, Any]]
    threshold: float = 0.1  # retrieval heads score above this (the settings' ``threshold``)
    recall_threshold: float = 0.5  # a test counts when its ROUGE-1 recall is above this

    def summary(self) -> dict[str, Any]:
        recalled = [t for t in self.tests if t["recalled"]]
        valid = self.scores[~np.isnan(self.scores)]
        return {
            "tests": len(self.tests), "recalled": len(recalled), "threshold": self.threshold,
            "recall_threshold": self.recall_threshold,
            "share_above_threshold": float((valid > self.threshold).mean()) if valid.size else None,
            "per_test": self.tests,
        }


def needle_tests(model: Model, cfg: dict[str, Any]) -> list[NeedleTest]:
    """Every needle × length × depth test of the settings ``cfg``; raises before any decoding
    if a needle's answer cannot be located or a length does not fit."""
    if not cfg["needles"]:
        raise InterpError("retrieval scores need at least one needle")
    for needle in cfg["needles"]:
        check_needle(needle)
    hay = haystack_ids(model, cfg["haystack"])  # tokenised once for all tests
    return [
        build_test(model, needle, length, depth, i, cfg["haystack"], hay=hay)
        for i, needle in enumerate(cfg["needles"]) for length in cfg["lengths"] for depth in cfg["depths"]
    ]


def test_key(test: NeedleTest) -> str:
    """The test's name in a scan's store (its unit key)."""
    return f"retrieval-{test.needle}-{test.length}-{test.depth}"


def score_test(model: Model, test: NeedleTest, cfg: dict[str, Any], keep: bool = False) -> dict[str, torch.Tensor]:
    """One needle test decoded and scored: every head's copy score, the answer's ROUGE-1 recall
    and the response (as bytes), ready for a scan's store. ``keep``: keep a copy of its prefill
    for the masking check (``keep_prefill``)."""
    cache = prefill(model, test.prompt_ids)
    if keep:
        keep_prefill(model, test, cache)
    generated, steps = decode_with_argmax(model, test, cfg["max_new_tokens"], cache=cache)
    response = model.tokenizer.decode(generated)
    recall = rouge1_recall(test.answer, response)
    shape = (model.cfg.n_layers, model.cfg.n_heads)
    score = copy_scores(test.prompt_ids, test.span, generated, steps) if steps else np.zeros(shape)
    return {"score": torch.as_tensor(score), "recall": torch.tensor(recall),
            "response": torch.tensor(list(response.encode()), dtype=torch.uint8)}


def merge_tests(tests: list[NeedleTest], saved: list[dict[str, torch.Tensor]], cfg: dict[str, Any],
                shape: tuple[int, int]) -> RetrievalResult:
    """The retrieval scores from every test's stored result, in test order: the mean copy score
    over the recalled tests (NaN where none was)."""
    totals = np.zeros(shape)
    n_ok, rows = 0, []
    for t, part in zip(tests, saved, strict=True):
        recall = float(part["recall"])
        response = bytes(part["response"].tolist()).decode(errors="replace")
        ok = recall > cfg["recall_threshold"]
        if ok:
            totals += part["score"].numpy()
            n_ok += 1
        rows.append({"needle": t.needle, "length": t.length, "depth": t.depth, "recall": recall,
                     "recalled": ok, "response": response})
    scores = totals / n_ok if n_ok else np.full_like(totals, np.nan)
    return RetrievalResult(scores, rows, float(cfg["threshold"]), float(cfg["recall_threshold"]))


def retrieval_scores(model: Model, *, settings: dict[str, Any] | None = None, checkpoint=None,
                     progress: bool = True, tests: list[NeedleTest] | None = None) -> RetrievalResult:
    """Retrieval score of every head over the needle tests (see the module docstring).

    ``tests``: the tests of ``settings`` if already built (``needle_tests``); otherwise they
    are built first, so a needle that cannot be located fails before any decoding."""
    cfg = settings or RetrievalSettings().as_dict()
    tests = tests if tests is not None else needle_tests(model, cfg)
    saved = []
    for t in tqdm(tests, desc="retrieval tests", disable=not progress):
        part = checkpoint.get(test_key(t)) if checkpoint is not None else None
        if part is None:
            part = score_test(model, t, cfg)
            if checkpoint is not None:
                checkpoint.put(test_key(t), part)
        saved.append(part)
    return merge_tests(tests, saved, cfg, (model.cfg.n_layers, model.cfg.n_heads))


def needle_recall(model: Model, tests: list[NeedleTest], max_new_tokens: int, interventions=None) -> float:
    """Mean ROUGE-1 recall of the answers over ``tests``, decoded as in scoring (``greedy_decode``)."""
    recalls = []
    for t in tests:
        generated = greedy_decode(model, t.prompt_ids, max_new_tokens, interventions=interventions)
        recalls.append(rouge1_recall(t.answer, model.tokenizer.decode(generated)))
    return float(np.mean(recalls))
