"""``interp.load(..., device_map=...)`` passes the map to transformers, and a model placed that way
is traced and scanned unchanged."""

from __future__ import annotations

import pytest
import torch
from wired_models import tiny_llama_folder

import interp
from interp.errors import InterpError

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tiny_llama_folder(tmp_path_factory.mktemp("models") / "tiny-a", n_ctx=256, seed=0)


MAPS = {
    "cpu": "cpu",
    "whole model": {"": "cpu"},
    "module by module": {"model.embed_tokens": "cpu", "model.layers.0": "cpu", "model.layers.1": "cpu",
                         "model.layers.2": "cpu", "model.norm": "cpu", "model.rotary_emb": "cpu", "lm_head": "cpu"},
}


@pytest.mark.parametrize("how", list(MAPS))
def test_device_map_model_scans_like_a_plain_load(folder, how, monkeypatch):
    from transformers import AutoModelForCausalLM

    plain = interp.load(folder)
    seen = []
    real = AutoModelForCausalLM.from_pretrained

    def spy(*args, **kwargs):
        seen.append(kwargs.get("device_map"))
        return real(*args, **kwargs)

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", spy)
    mapped = interp.load(folder, device_map=MAPS[how])
    assert seen == [MAPS[how]]  # passed to transformers, which placed every module
    ids = torch.randint(1, 100, (2, 12), generator=torch.Generator().manual_seed(0))
    assert torch.equal(plain.run(ids), mapped.run(ids))
    kwargs = dict(lengths=(4, 8), samples=2, text_tokens=32, text_samples=2, causal_checks=False, progress=False)
    a = interp.heads.scan(plain, ["prev_token", "induction", "ngram"], **kwargs)
    b = interp.heads.scan(mapped, ["prev_token", "induction", "ngram"], **kwargs)
    assert a.df.equals(b.df)


def test_device_map_and_device_together_is_an_error(folder):
    with pytest.raises(InterpError, match="device= or device_map="):
        interp.load(folder, device="cpu", device_map="cpu")
