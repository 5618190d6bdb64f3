"""Every Python snippet of the README and of the site's pages (``docs/**/*.md``: the guide split
out of the README) runs as written (those that say on their first line why they cannot run here
are skipped, visibly), on a tiny random Llama with SmolLM2's layer and head counts (so every
layer and head a snippet names exists) standing in for the bundled model that ``interp.load``
would return. The tutorials run on the real models (``tests/test_tutorials.py``)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from wired_models import alice_word_tokenizer

import interp

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
SNIPPETS = [(page.relative_to(ROOT).as_posix(), code) for page in PAGES
            for code in re.findall(r"```python\n(.*?)```", page.read_text(encoding="utf-8"), flags=re.S)]
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def smollm2_shaped():
    from transformers import AutoModelForCausalLM, LlamaConfig

    tok = alice_word_tokenizer()
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=72, intermediate_size=96, num_hidden_layers=30,
                      num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=2048,
                      pad_token_id=0, eos_token_id=2)
    return interp.Model(AutoModelForCausalLM.from_config(cfg, dtype=torch.float32).eval(), tok, name="smollm2-135m")


def test_the_readme_and_the_guide_have_python_snippets():
    where = {page for page, _ in SNIPPETS}
    assert {"README.md", "docs/index.md", "docs/guide/tracing.md", "docs/guide/heads.md"} <= where
    assert len(SNIPPETS) >= 6


@pytest.mark.parametrize("index", range(len(SNIPPETS)), ids=[f"{page}-{i}" for i, (page, _) in enumerate(SNIPPETS)])
def test_readme_snippet_runs(index, smollm2_shaped, monkeypatch, capsys):
    page, code = SNIPPETS[index]
    first = code.splitlines()[0]
    if first.startswith("# not run by the README test"):
        pytest.skip(first.lstrip("# "))
    monkeypatch.setattr(interp, "load", lambda *args, **kwargs: smollm2_shaped)
    exec(compile(code, f"{page} python snippet {index + 1}", "exec"), {"__name__": "readme"})
    capsys.readouterr()
