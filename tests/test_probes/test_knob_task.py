"""The shipped context-vs-prior task."""

from __future__ import annotations

import pytest

from interp.errors import InterpError
from interp.probes.knob_task import INTENTS, intent_accuracy, knob_items, prompt


def test_items_are_counterfactual_seeded_and_plentiful():
    items = knob_items(200, seed=0)
    assert len(items) == 200 and len({(i.subject, i.context_object) for i in items}) == 200
    assert all(i.context_object != i.prior and i.context.startswith(i.subject) for i in items)
    assert items == knob_items(200, seed=0) and items != knob_items(200, seed=1)
    assert items[0].answer("context") == items[0].context_object and items[0].answer("prior") == items[0].prior
    with pytest.raises(InterpError, match="at most"):
        knob_items(10**6)


@pytest.mark.real_model
def test_prompts_and_intent_accuracy_on_smollm2(smollm2):
    items = knob_items(16, seed=0)
    text = prompt(smollm2, items[0], "context")
    assert INTENTS["context"] in text and items[0].context in text and "<|im_start|>assistant" in text
    acc = intent_accuracy(smollm2, items)
    assert set(acc) == {"prior", "context"} and all(0.0 <= v <= 1.0 for v in acc.values())
