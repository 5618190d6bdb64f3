"""Retrieval heads (Wu et al. 2024, "Retrieval Head Mechanistically Explains Long-Context Factuality").

Needle-in-a-haystack tests: a needle sentence is placed at several depths of haystacks of
several lengths (the shipped public-domain text), the model answers a question about it by
greedy decoding, and at every decoding step each head's arg-max key over the prompt is read
from the attention kernel. A head copies a token when that key lies in the answer span and
holds the very token being generated; its score in a test is the number of copies divided by
the span length, averaged over the tests whose answer is recalled (ROUGE-1 recall > 0.5).
Heads above 0.1 are retrieval heads. The masking check zeroes the queries of chosen heads
during decoding only, so they attend uniformly, as the paper does.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from importlib import resources
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from interp.attention import observers_of
from interp.corpus import text as corpus_text
from interp.errors import InterpError, PromptTooLongError
from interp.kernels import attention_stats
from interp.model import Model


def default_needles() -> list[dict[str, str]]:
    """Three needle / question / answer triples that ship with the package."""
    return json.loads(resources.files("interp").joinpath("data", "needles.json").read_text())


@dataclass
class RetrievalSettings:
    lengths: tuple[int, ...] = (1000, 2000)
    depths: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0)
    needles: list[dict[str, str]] = field(default_factory=default_needles)
    max_new_tokens: int = 24
    recall_threshold: float = 0.5
    threshold: float = 0.1
    mask_k: int = 10
    mask_seeds: tuple[int, ...] = (0, 1)
    haystack: str = "alice"

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["lengths"], d["depths"], d["mask_seeds"] = list(self.lengths), list(self.depths), list(self.mask_seeds)
        return d


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


def build_test(model: Model, needle: dict[str, str], length: int, depth: float, index: int = 0,
               haystack: str = "alice") -> NeedleTest:
    """A prompt of about ``length`` tokens with the needle at ``depth`` (0: start, 1: end)."""
    tok = model.tokenizer
    if length > model.cfg.n_ctx:
        raise PromptTooLongError(f"haystack length {length} exceeds {model.name}'s context window of {model.cfg.n_ctx}")
    hay = tok(corpus_text(haystack), add_special_tokens=False)["input_ids"]
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
    enc = tok(prompt, add_special_tokens=add_special, return_offsets_mapping=True)
    ids, offsets = enc["input_ids"], enc["offset_mapping"]
    start_char = prompt.find(needle["needle"])
    a = needle["needle"].find(needle["answer"])
    if start_char < 0 or a < 0:
        raise InterpError(f"the answer {needle['answer']!r} is not a substring of its needle {needle['needle']!r}")
    lo, hi = start_char + a, start_char + a + len(needle["answer"])
    span = [i for i, (s, e) in enumerate(offsets) if s < hi and e > lo]
    if not span:
        raise InterpError(f"could not locate the answer {needle['answer']!r} among the prompt's tokens")
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


def decode_with_argmax(model: Model, test: NeedleTest, max_new_tokens: int,
                       interventions: dict | None = None) -> tuple[list[int], list[torch.Tensor]]:
    """Greedy decoding; for every generated token, each head's arg-max prompt key ``[layers, heads]``.

    As in the paper, the prompt except its last token is prefilled, then decoding starts from
    the last prompt token, so the first answer token counts too. Stops at a newline or EOS.
    """
    ids = test.prompt_ids.to(model.device)
    argmax: dict[int, torch.Tensor] = {}
    decoding = [False]

    def observe(layer, q, k, spec, lse):
        if decoding[0]:
            s = attention_stats(q[:, :, -1:], k, scaling=spec.scaling, sliding_window=spec.sliding_window,
                                softcap=spec.softcap, row_stats=True)
            argmax[layer] = s.argmax[0, :, 0].cpu()

    modules = [model.module(f"{model.adapter.layers}.{layer}.{model.adapter.attn}") for layer in range(model.cfg.n_layers)]
    for m in modules:
        observers_of(m).append(observe)
    eos = getattr(model.tokenizer, "eos_token_id", None)
    generated: list[int] = []
    per_step: list[torch.Tensor] = []
    try:
        with model.trace(interventions=interventions), torch.no_grad():
            out = model.hf(input_ids=ids[:, :-1], use_cache=True)
            cache, nxt = out.past_key_values, ids[:, -1:]
            decoding[0] = True
            for _ in range(max_new_tokens):
                out = model.hf(input_ids=nxt, past_key_values=cache, use_cache=True)
                cache = out.past_key_values
                token = int(out.logits[0, -1].argmax())
                if token == eos or "\n" in model.tokenizer.decode([token]):
                    break
                generated.append(token)
                per_step.append(torch.stack([argmax[layer] for layer in range(model.cfg.n_layers)]))
                nxt = torch.tensor([[token]], device=ids.device)
    finally:
        for m in modules:
            observers_of(m).remove(observe)
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

    def summary(self) -> dict[str, Any]:
        recalled = [t for t in self.tests if t["recalled"]]
        valid = self.scores[~np.isnan(self.scores)]
        return {
            "tests": len(self.tests), "recalled": len(recalled),
            "share_above_threshold": float((valid > 0.1).mean()) if valid.size else None,
            "per_test": self.tests,
        }


def _tests(model: Model, cfg: dict[str, Any]) -> list[NeedleTest]:
    return [
        build_test(model, needle, length, depth, i, cfg["haystack"])
        for i, needle in enumerate(cfg["needles"]) for length in cfg["lengths"] for depth in cfg["depths"]
    ]


def retrieval_scores(model: Model, *, settings: dict[str, Any] | None = None, checkpoint=None,
                     progress: bool = True) -> RetrievalResult:
    """Retrieval score of every head over the needle tests (see the module docstring)."""
    cfg = settings or RetrievalSettings().as_dict()
    tests = _tests(model, cfg)  # built first: a needle that cannot be located fails before any work
    totals = np.zeros((model.cfg.n_layers, model.cfg.n_heads))
    n_ok, rows = 0, []
    for t in tqdm(tests, desc="retrieval tests", disable=not progress):
        key = f"retrieval-{t.needle}-{t.length}-{t.depth}"
        saved = checkpoint.get(key) if checkpoint is not None else None
        if saved is None:
            generated, steps = decode_with_argmax(model, t, cfg["max_new_tokens"])
            response = model.tokenizer.decode(generated)
            recall = rouge1_recall(t.answer, response)
            score = copy_scores(t.prompt_ids, t.span, generated, steps) if steps else np.zeros_like(totals)
            saved = {"score": torch.as_tensor(score), "recall": torch.tensor(recall),
                     "response": torch.tensor(list(response.encode()), dtype=torch.uint8)}
            if checkpoint is not None:
                checkpoint.put(key, saved)
        recall = float(saved["recall"])
        response = bytes(saved["response"].tolist()).decode(errors="replace")
        ok = recall > cfg["recall_threshold"]
        if ok:
            totals += saved["score"].numpy()
            n_ok += 1
        rows.append({"needle": t.needle, "length": t.length, "depth": t.depth, "recall": recall,
                     "recalled": ok, "response": response})
    scores = totals / n_ok if n_ok else np.full_like(totals, np.nan)
    return RetrievalResult(scores, rows)


def needle_recall(model: Model, tests: list[NeedleTest], max_new_tokens: int, interventions=None) -> float:
    """Mean ROUGE-1 recall of the answers over ``tests``."""
    recalls = []
    for t in tests:
        ids = model.generate(t.prompt_ids, max_new_tokens=max_new_tokens, interventions=interventions)[0]
        recalls.append(rouge1_recall(t.answer, ids.split("\n")[0]))
    return float(np.mean(recalls))


def masking_check(model: Model, table, cfg: dict[str, Any], progress: bool = True) -> dict[str, Any]:
    """Needle recall with the top-k retrieval heads' queries zeroed while decoding, against k
    random heads drawn outside the top 100 (Wu et al.'s control), and unmasked. Runs on the
    tests of the shortest haystack length, to bound its cost."""
    from interp.heads.causal import random_heads

    k = cfg["mask_k"]
    scores = table.matrix("retrieval")
    if np.isnan(scores).all():
        return {"skipped": "no needle test was recalled, so there are no retrieval scores to mask"}
    order = np.argsort(-np.nan_to_num(scores, nan=-1).ravel())
    n_heads = model.cfg.n_heads
    ranked = [(int(i // n_heads), int(i % n_heads)) for i in order]
    top, top100 = ranked[:k], ranked[: min(100, len(ranked) // 2)]
    tests = _tests(model, {**cfg, "lengths": sorted(cfg["lengths"])[:1]})

    def masked(heads):
        by_layer: dict[int, list[int]] = {}
        for layer, h in heads:
            by_layer.setdefault(layer, []).append(h)
        return {f"blocks.{layer}.attn.hook_q": zero_queries_when_decoding(hs) for layer, hs in by_layer.items()}

    conditions = {"none": None, "top": masked(top)}
    randoms = {s: random_heads(model, k, top100, s) for s in cfg["mask_seeds"]}
    for s, heads in randoms.items():
        conditions[f"random_{s}"] = masked(heads)
    recall = {}
    for name, ivs in tqdm(conditions.items(), desc="retrieval masking", disable=not progress):
        recall[name] = needle_recall(model, tests, cfg["max_new_tokens"], ivs)
    return {
        "k": k, "tests": len(tests), "length": sorted(cfg["lengths"])[0], "top_heads": [f"{layer}.{h}" for layer, h in top],
        "random_heads": {str(s): [f"{layer}.{h}" for layer, h in hs] for s, hs in randoms.items()},
        "recall": recall,
    }
