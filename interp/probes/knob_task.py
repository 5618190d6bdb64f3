"""The context-vs-prior task of Minder et al. (2025, "Controllable Context Sensitivity and the Knob
Behind It"): counterfactual contexts ("Paris is in England.") with a query and an intent that
says whether to answer from the context or from prior knowledge.

Items come from a small shipped table of (subject, object) facts: each subject is paired with
the objects of other subjects as counterfactual contexts. Prompts follow the paper's format, in
the model's chat template where it has one.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from importlib import resources
from typing import Literal

import numpy as np
import torch

from interp.core.model import Model
from interp.errors import InterpError

Intent = Literal["context", "prior"]
INTENTS: dict[str, str] = {
    "prior": "Ignore the context in answering the query.",
    "context": "Only consider the context in answering the query.",
}
SYSTEM = "Answer the following query considering the provided context. Answer with only one word."


@dataclass(frozen=True)
class KnobItem:
    subject: str
    prior: str  # the true object
    context_object: str  # the counterfactual object the context states
    context: str
    query: str

    def answer(self, intent: Intent) -> str:
        return self.context_object if intent == "context" else self.prior


def knob_items(n: int = 200, seed: int = 0) -> list[KnobItem]:
    """``n`` counterfactual items (seeded) from the shipped fact table."""
    table = json.loads(resources.files("interp").joinpath("data", "facts.json").read_text())
    pairs, rel = table["pairs"], table["relation"]
    candidates = [(p, q) for p in pairs for q in pairs if q["object"] != p["object"]]
    if n > len(candidates):
        raise InterpError(f"the fact table gives at most {len(candidates)} items; asked for {n}")
    rng = random.Random(seed)
    chosen = rng.sample(candidates, n)
    return [
        KnobItem(p["subject"], p["object"], q["object"], rel["statement"].format(subject=p["subject"], object=q["object"]),
                 rel["query"].format(subject=p["subject"]))
        for p, q in chosen
    ]


def prompt(model: Model, item: KnobItem, intent: Intent) -> str:
    """The paper's prompt for ``item`` under ``intent``."""
    user = f"Context: {item.context}\nInstruction: {INTENTS[intent]}\nQuery: {item.query}"
    if getattr(model.tokenizer, "chat_template", None):
        messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]
        return model.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return f"{SYSTEM}\n{user}\nAnswer:"


def first_token(model: Model, word: str, after_prompt: str) -> int:
    """The first token of ``word`` as the model would start it after ``after_prompt``."""
    full = model.tokenizer(after_prompt + word, add_special_tokens=False)["input_ids"]
    base = model.tokenizer(after_prompt, add_special_tokens=False)["input_ids"]
    if full[: len(base)] != base or len(full) == len(base):
        raise InterpError(f"cannot isolate the first token of {word!r} after the prompt")
    return full[len(base)]


def choice_logits(model: Model, items: list[KnobItem], intent: Intent, *, batch_size: int = 16,
                  interventions: dict | None = None) -> np.ndarray:
    """``[items, 2]`` last-position logits of the (prior, context) answers' first tokens."""
    out = []
    for s in range(0, len(items), batch_size):
        batch = items[s : s + batch_size]
        texts = [prompt(model, it, intent) for it in batch]
        ids = [[first_token(model, it.prior, t), first_token(model, it.context_object, t)] for it, t in zip(batch, texts, strict=True)]
        tokens = model.to_tokens(texts)
        logits = model.run(tokens, interventions=interventions)[:, -1].float().cpu()
        out.append(torch.stack([logits[i, torch.tensor(pair)] for i, pair in enumerate(ids)]).numpy())
    return np.concatenate(out)


def intent_accuracy(model: Model, items: list[KnobItem], **kwargs) -> dict[str, float]:
    """Per intent, the share of items where the intended answer beats the other one."""
    result = {}
    for intent in ("prior", "context"):
        logits = choice_logits(model, items, intent, **kwargs)  # type: ignore[arg-type]
        wanted = 1 if intent == "context" else 0
        result[intent] = float((logits.argmax(1) == wanted).mean())
    return result
