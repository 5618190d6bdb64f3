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

from interp import logs
from interp.core.inputs import left_pad
from interp.core.kv_cache import fork, run_cached
from interp.core.model import Model
from interp.errors import InterpError, PromptTooLongError
from interp.heads.settings import RetrievalSettings, default_needles  # noqa: F401 (re-exported)
from interp.kernels import decode_argmax
from interp.models.corpus import text as corpus_text
from interp.models.fingerprint import weights_fingerprint


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


# Needle tests of one length are decoded together, as rows of one left-padded batch: a decoding
# step reads the same weights for every row, so a batch of rows costs about what one row does.
# Rows per batch: at most this many prompt tokens in a batch (the prefill's activations grow with
# it), and one row at least.
BATCH_TOKENS = 18_000


def test_groups(tests: Sequence[NeedleTest], batch_tokens: int | None = None) -> list[list[NeedleTest]]:
    """``tests`` as the batches they are decoded in: tests of one length, in test order, at most
    ``batch_tokens // length`` of them (at least one) per batch (default ``BATCH_TOKENS``)."""
    batch_tokens = BATCH_TOKENS if batch_tokens is None else batch_tokens
    by_length: dict[int, list[NeedleTest]] = {}
    for t in tests:
        by_length.setdefault(t.length, []).append(t)
    groups = []
    for length, same in by_length.items():
        rows = max(1, batch_tokens // max(1, length))
        groups += [same[i : i + rows] for i in range(0, len(same), rows)]
    return groups


def group_key(group: Sequence[NeedleTest]) -> str:
    """A batch of tests' name in a scan's store (its unit key): length, first test, count."""
    first = group[0]
    return f"retrieval-{first.length}-{first.needle}-{first.depth}-{len(group)}"


@dataclass
class Prefill:
    """Prompts prefilled but for their last tokens, as rows of one left-padded batch; decoding
    starts from the last tokens (``last``). ``pads``: each row's left padding."""

    cache: Any
    mask: torch.Tensor  # [rows, tokens]: 1 for a real token
    last: torch.Tensor  # [rows, 1]
    pads: torch.Tensor  # [rows]

    @property
    def rows(self) -> int:
        return int(self.last.shape[0])

    def repeat(self, n: int) -> Prefill:
        """A copy with every row repeated ``n`` times in a row (rows r*n .. r*n+n-1 are row r),
        which later decoding may extend."""
        cache = fork(self.cache, n) if self.cache is not None else None
        return Prefill(cache, self.mask.repeat_interleave(n, 0), self.last.repeat_interleave(n, 0),
                       self.pads.repeat_interleave(n, 0))

    def nbytes(self) -> int:
        return sum(t.nelement() * t.element_size() for layer in getattr(self.cache, "layers", [])
                   for t in (getattr(layer, "keys", None), getattr(layer, "values", None)) if isinstance(t, torch.Tensor))


def prefill(model: Model, prompts: torch.Tensor | Sequence[torch.Tensor]) -> Prefill:
    """The key/value cache of every prompt token but the last, prompts as rows of one batch
    (left-padded when their lengths differ); ``greedy_decode`` and ``decode_batch`` start from it.
    A one-token prompt alone has no cache (``cache`` is None)."""
    rows = [prompts.reshape(-1)] if isinstance(prompts, torch.Tensor) else [p.reshape(-1) for p in prompts]
    if not rows or any(len(r) == 0 for r in rows):
        raise InterpError("prefill needs at least one prompt, and no empty one")
    n = max(len(r) for r in rows) - 1
    if n == 0 and len(rows) > 1:
        raise InterpError("prompts decoded together need at least two tokens each")
    tok = model.tokenizer
    pad_id = next((i for i in (getattr(tok, "pad_token_id", None), getattr(tok, "eos_token_id", None)) if i is not None), 0)
    ids, mask = left_pad([r[:-1] for r in rows], int(pad_id))
    pads = n - mask.sum(1)
    last = torch.stack([r[-1:] for r in rows]).to(model.device)
    if n == 0:
        return Prefill(None, mask, last, pads)
    # An unpadded batch gets no mask, so a single prompt runs exactly as it would alone.
    extra = {"attention_mask": mask.to(model.device)} if bool(pads.any()) else {}
    with torch.no_grad():
        cache = run_cached(model.hf, input_ids=ids.to(model.device), **extra, **_one_logit(model))[1]
    return Prefill(cache, mask, last, pads)


# Prefills of the masking check's tests kept from the scoring pass in this process (the masking
# check decodes its conditions from them instead of prefilling again), up to this many bytes;
# each with the weights it was computed from (a prefill of other weights is not used).
KEEP_BYTES = 2 * 2**30
_kept: weakref.WeakKeyDictionary[Model, dict[tuple[str, ...], tuple[list[torch.Tensor], Prefill, tuple]]] = \
    weakref.WeakKeyDictionary()


def keep_prefill(model: Model, tests: Sequence[NeedleTest], start: Prefill) -> None:
    """Keep a copy of ``tests``' prefill for the masking check, within ``KEEP_BYTES`` per model."""
    if start.cache is None:
        return
    kept = _kept.setdefault(model, {})
    if sum(p.nbytes() for _, p, _ in kept.values()) + start.nbytes() <= KEEP_BYTES:
        kept[tuple(test_key(t) for t in tests)] = ([t.prompt_ids for t in tests], start.repeat(1),
                                                   weights_fingerprint(model))


def forget_prefills(model: Model) -> None:
    """Drop the prefills kept for ``model`` (the masking check has run, or will not)."""
    _kept.pop(model, None)


def take_prefill(model: Model, tests: Sequence[NeedleTest]) -> Prefill:
    """``tests``' prefill: the one kept by the scoring pass (removed from the store) if the
    prompts and the model's weights are still those it was computed from, else a new one."""
    ids, start, weights = _kept.get(model, {}).pop(tuple(test_key(t) for t in tests), (None, None, None))
    if ids is not None and start is not None and len(ids) == len(tests) and \
            all(torch.equal(a, t.prompt_ids) for a, t in zip(ids, tests, strict=True)) and \
            weights == weights_fingerprint(model):
        return start
    return prefill(model, [t.prompt_ids for t in tests])


def _stops(model: Model, token: int) -> bool:
    eos = getattr(model.tokenizer, "eos_token_id", None)
    return token == eos or "\n" in model.tokenizer.decode([token])


def decode_batch(model: Model, start: Prefill, max_new_tokens: int, *, interventions: dict | None = None,
                 on_step: Callable[[list[int]], None] | None = None) -> list[list[int]]:
    """Greedy decoding of every row of ``start`` at once (``start``'s cache is extended in place:
    decode from ``start.repeat(1)`` to keep it). Each row stops on its own at EOS or a newline
    (not returned); finished rows decode on, unused, so the batch keeps its shape.
    ``interventions`` may act on each row differently (``zero_queries_by_row``).
    ``on_step(rows)`` runs after each step with the rows that gained a token in it."""
    rows = start.rows
    generated: list[list[int]] = [[] for _ in range(rows)]
    running = [True] * rows
    padded = bool(start.pads.any())
    mask, cache, nxt = start.mask.to(model.device), start.cache, start.last
    with model.trace(interventions=interventions), torch.no_grad():
        for _ in range(max_new_tokens):
            extra = {}
            if padded:  # an unpadded batch runs without a mask, exactly as one prompt alone
                mask = torch.cat([mask, mask.new_ones(rows, 1)], 1)
                extra = {"attention_mask": mask}
            out, cache = run_cached(model.hf, cache, input_ids=nxt, **extra)
            tokens = out.logits[:, -1].argmax(-1).tolist()
            grew = []
            for r, t in enumerate(tokens):
                if running[r] and _stops(model, t):
                    running[r] = False
                elif running[r]:
                    generated[r].append(t)
                    grew.append(r)
            if on_step is not None:
                on_step(grew)
            if not any(running):
                break
            nxt = torch.tensor(tokens, device=start.last.device)[:, None]
    return generated


def greedy_decode(model: Model, prompt_ids: torch.Tensor, max_new_tokens: int, *,
                  interventions: dict | None = None, start: Prefill | None = None) -> list[int]:
    """Greedy decoding as in Wu et al.: the prompt except its last token is prefilled, then
    decoding starts from the last prompt token, so every generated token, the first included,
    comes from a one-token decoding step (where ``zero_queries_when_decoding`` masks heads and
    decode observers read the arg-max keys). Stops at EOS or a newline, which is not returned.
    ``start``: this prompt's ``prefill`` (extended in place). Retrieval scoring and the masking
    check decode the same way, many prompts at once (``decode_batch``)."""
    return decode_batch(model, start or prefill(model, prompt_ids), max_new_tokens, interventions=interventions)[0]


def decode_with_argmax(model: Model, tests: Sequence[NeedleTest], max_new_tokens: int,
                       start: Prefill | None = None) -> tuple[list[list[int]], list[list[torch.Tensor]]]:
    """Greedy decoding of ``tests`` as rows of one batch (``decode_batch``); for every row and
    every token it generated, each head's arg-max prompt key ``[layers, heads]`` (an absolute
    position in that row's own prompt) at the step that produced it.

    A decoding step needs only each head's arg-max key, so each layer computes that and nothing
    else (``decode_argmax``), padding keys excluded. A sliding-window layer's cache holds only
    its window, so its key indices are shifted to absolute positions."""
    start = start or prefill(model, [t.prompt_ids for t in tests])
    pads = start.pads.to(model.device)
    padded = bool(pads.any())
    argmax: dict[int, torch.Tensor] = {}
    keys_so_far = [start.mask.shape[1]]  # padded positions in the cache before this step's token

    def observe(layer, q, k, spec, lse):
        if q.shape[2] != 1:
            return  # a prefill; decoding steps are what is read
        total = keys_so_far[0] + 1
        first = total - k.shape[2]  # padded position of the cache's first key
        real = torch.arange(first, total, device=k.device)[None, :] >= pads[:, None] if padded else None
        idx = decode_argmax(q, k, scaling=spec.scaling, sliding_window=spec.sliding_window, softcap=spec.softcap,
                            key_mask=real)
        argmax[layer] = idx + first - pads[:, None]

    per_row: list[list[torch.Tensor]] = [[] for _ in range(start.rows)]

    def on_step(grew: list[int]) -> None:
        if grew:
            snap = torch.stack([argmax[layer] for layer in range(model.cfg.n_layers)], 1).cpu()  # [rows, layers, heads]
            for r in grew:
                per_row[r].append(snap[r])
        keys_so_far[0] += 1

    with model.trace(observe=observe):
        generated = decode_batch(model, start, max_new_tokens, on_step=on_step)
    return generated, per_row


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
    """The test's name (``retrieval-NEEDLE-LENGTH-DEPTH``)."""
    return f"retrieval-{test.needle}-{test.length}-{test.depth}"


def score_tests(model: Model, tests: Sequence[NeedleTest], cfg: dict[str, Any],
                keep: bool = False) -> dict[str, torch.Tensor]:
    """A batch of needle tests (``test_groups``) decoded together and scored: for test ``i``,
    every head's copy score (``i.score``), the answer's ROUGE-1 recall (``i.recall``) and the
    response as bytes (``i.response``), ready for a scan's store (``split_group`` reads them).
    ``keep``: keep a copy of the batch's prefill for the masking check (``keep_prefill``)."""
    start = prefill(model, [t.prompt_ids for t in tests])
    if keep:
        keep_prefill(model, tests, start)
    generated, steps = decode_with_argmax(model, tests, cfg["max_new_tokens"], start)
    shape = (model.cfg.n_layers, model.cfg.n_heads)
    out: dict[str, torch.Tensor] = {}
    for i, (test, tokens, row_steps) in enumerate(zip(tests, generated, steps, strict=True)):
        response = model.tokenizer.decode(tokens)
        score = copy_scores(test.prompt_ids, test.span, tokens, row_steps) if row_steps else np.zeros(shape)
        out[f"{i}.score"] = torch.as_tensor(score)
        out[f"{i}.recall"] = torch.tensor(rouge1_recall(test.answer, response))
        out[f"{i}.response"] = torch.tensor(list(response.encode()), dtype=torch.uint8)
    return out


def split_group(part: dict[str, torch.Tensor], n: int) -> list[dict[str, torch.Tensor]]:
    """``score_tests``' result as one ``{"score", "recall", "response"}`` dict per test."""
    return [{name: part[f"{i}.{name}"] for name in ("score", "recall", "response")} for i in range(n)]


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
    groups = test_groups(tests)
    saved = []
    for group in logs.progress(groups, "retrieval test batches", progress):
        part = checkpoint.get(group_key(group)) if checkpoint is not None else None
        if part is None:
            part = score_tests(model, group, cfg)
            if checkpoint is not None:
                checkpoint.put(group_key(group), part)
        saved += split_group(part, len(group))
    return merge_tests([t for g in groups for t in g], saved, cfg, (model.cfg.n_layers, model.cfg.n_heads))


def needle_recall(model: Model, tests: list[NeedleTest], max_new_tokens: int, interventions=None) -> float:
    """Mean ROUGE-1 recall of the answers over ``tests``, each decoded alone (``greedy_decode``):
    the reference that batched decoding is checked against."""
    recalls = []
    for t in tests:
        generated = greedy_decode(model, t.prompt_ids, max_new_tokens, interventions=interventions)
        recalls.append(rouge1_recall(t.answer, model.tokenizer.decode(generated)))
    return float(np.mean(recalls))
