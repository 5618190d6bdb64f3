"""Bad inputs to model loading: damaged or unsupported model files, unknown dtypes and devices,
objects that are not causal LMs. Each fails at once with one line naming the value or file and
what would be valid, and leaves no lock file, temporary or half-built cache entry behind."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaModel, OPTConfig, OPTForCausalLM

import interp
from interp.errors import InterpError, OutOfRangeError, UnknownNameError
from interp.models import cache, loading
from interp.models.loading import DeviceUnavailableError, LoadArgumentError, ModelFileError

pytestmark = pytest.mark.usefixtures("one_thread")

FAMILIES = ("gemma3", "gpt2", "gpt_neox", "llama", "mistral", "qwen")


@pytest.fixture
def cache_root(tmp_path, monkeypatch):
    monkeypatch.setenv("INTERP_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def leftovers(root: Path) -> list[str]:
    """Lock files, hidden temporaries and cache entries anywhere under ``root``."""
    found = [p for p in root.rglob("*") if p.name.endswith(".lock") or ".tmp-" in p.name]
    models = root / "cache" / "models"
    if models.exists():
        found += list(models.iterdir())
    return sorted(str(p.relative_to(root)) for p in found)


def one_line(err: pytest.ExceptionInfo) -> str:
    message = str(err.value)
    assert "\n" not in message and isinstance(err.value, InterpError)
    return message


# -- tiny model files built here ------------------------------------------------------------------------
def write_gguf(path: Path, arch: str = "llama", rows: int = 16, tag: int = 0) -> Path:
    """A small but well-formed GGUF file: metadata and two float32 tensors."""
    from gguf import GGUFWriter

    writer = GGUFWriter(str(path), arch)
    writer.add_uint32(f"{arch}.block_count", 1)
    writer.add_uint32("test.tag", tag)  # different tags, different files (and sha256)
    writer.add_token_list(["a", "b", "c"])
    writer.add_tensor("token_embd.weight", np.ones((rows, 8), dtype=np.float32))
    writer.add_tensor("output.weight", np.full((rows, 8), 0.5, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def tiny_config() -> LlamaConfig:
    return LlamaConfig(
        vocab_size=16,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=32,
    )


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory) -> Path:
    """A whole tiny llama folder (weights and config, no tokenizer files)."""
    folder = tmp_path_factory.mktemp("tiny")
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(tiny_config()).save_pretrained(folder)
    return folder


def copy_folder(src: Path, dst: Path) -> Path:
    dst.mkdir()
    for f in src.iterdir():
        (dst / f.name).write_bytes(f.read_bytes())
    return dst


def word_tokenizer():
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(["[UNK]", "the", "cat"])}
    return PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer(models.WordLevel(vocab, unk_token="[UNK]")), unk_token="[UNK]"
    )


# -- GGUF files ---------------------------------------------------------------------------------------
def test_valid_gguf_passes_the_check(tmp_path):
    info = loading.check_gguf(write_gguf(tmp_path / "ok.gguf"))
    assert info.architecture == "llama" and info.n_tensors == 2


@pytest.mark.parametrize("keep", [-1, -300, 40, 10, 0], ids=["last-byte", "in-data", "in-header", "tiny", "empty"])
def test_truncated_gguf(tmp_path, cache_root, keep):
    gguf = write_gguf(tmp_path / "cut.gguf")
    data = gguf.read_bytes()
    gguf.write_bytes(data[: len(data) + keep] if keep < 0 else data[:keep])
    with pytest.raises(ModelFileError) as err:
        interp.load(str(gguf))
    message = one_line(err)
    assert message.startswith(f"{gguf} is damaged:")
    assert ("truncated" in message) or ("empty" in message)
    assert leftovers(tmp_path) == []


def test_gguf_that_is_no_gguf(tmp_path, cache_root):
    gguf = tmp_path / "fake.gguf"
    gguf.write_bytes(b"PK\x03\x04 this is a zip file")
    with pytest.raises(ModelFileError, match=r"is damaged: not a GGUF file \(it starts with b'PK"):
        interp.load(str(gguf))
    gguf.write_bytes(b"GGUF pretend weights")  # the magic, then nonsense
    with pytest.raises(ModelFileError, match=r"is damaged: GGUF version \d+ \(readable versions: 2, 3\)"):
        loading.prepare(gguf)
    assert leftovers(tmp_path) == []


def test_gguf_of_unsupported_architecture(tmp_path, cache_root):
    gguf = write_gguf(tmp_path / "bert.gguf", arch="bert")
    with pytest.raises(ModelFileError) as err:
        interp.load(str(gguf))
    message = one_line(err)
    assert message.startswith(f"{gguf} is a GGUF model of architecture 'bert', which is unsupported")
    assert all(family in message for family in FAMILIES)
    assert leftovers(tmp_path) == []


def test_failed_conversion_leaves_nothing(tmp_path, cache_root, monkeypatch):
    def convert(gguf: Path, out: Path, label: str) -> None:
        (out / "model.safetensors").write_bytes(b"half written")
        raise ValueError("GGUF model with architecture llama is not supported yet.")

    monkeypatch.setattr(loading, "_convert_gguf", convert)
    gguf = write_gguf(tmp_path / "model.gguf")
    with pytest.raises(ModelFileError) as err:
        interp.load(str(gguf))
    assert one_line(err) == (
        f"{gguf} could not be converted to a float model "
        "(ValueError: GGUF model with architecture llama is not supported yet.)"
    )
    assert leftovers(tmp_path) == []


# -- Hugging Face folders ----------------------------------------------------------------------------------
def test_safetensors_with_broken_header(tmp_path, cache_root, tiny_folder):
    folder = copy_folder(tiny_folder, tmp_path / "model")
    weights = folder / "model.safetensors"
    data = weights.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    weights.write_bytes(data[:8] + b"{" + b"x" * (n - 1) + data[8 + n :])  # same length, not JSON
    with pytest.raises(ModelFileError) as err:
        interp.load(folder)
    assert one_line(err).startswith(f"{weights} is damaged: broken safetensors header (JSONDecodeError")

    weights.write_bytes(struct.pack("<Q", 10**12) + data[8:])  # a header longer than the file
    with pytest.raises(ModelFileError, match=r"model.safetensors is damaged: broken safetensors header \(it claims"):
        interp.load(folder)
    assert leftovers(tmp_path) == []


def test_truncated_safetensors(tmp_path, cache_root, tiny_folder):
    folder = copy_folder(tiny_folder, tmp_path / "model")
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    with pytest.raises(ModelFileError) as err:
        interp.load(folder)
    assert one_line(err).startswith(f"{weights} is damaged: truncated (")
    weights.write_bytes(b"\x01\x02")
    with pytest.raises(ModelFileError, match="too short for a safetensors header"):
        interp.load(folder)
    assert leftovers(tmp_path) == []


def test_folder_with_config_but_no_weights(tmp_path, cache_root):
    folder = tmp_path / "model"
    folder.mkdir()
    tiny_config().save_pretrained(folder)
    with pytest.raises(ModelFileError) as err:
        interp.load(folder)
    assert one_line(err) == (
        f"{folder} has a config.json but no weights: expected model.safetensors "
        "(or model.safetensors.index.json with its shards, or pytorch_model.bin)"
    )
    assert leftovers(tmp_path) == []


def test_sharded_folder_missing_a_shard(tmp_path, tiny_folder):
    folder = copy_folder(tiny_folder, tmp_path / "model")
    (folder / "model.safetensors").rename(folder / "model-00001-of-00002.safetensors")
    index = {"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(ModelFileError, match=r"is incomplete: .* lists model-00002-of-00002.safetensors, which is missing"):
        interp.load(folder)


def test_truncated_torch_bin(tmp_path, tiny_folder):
    folder = copy_folder(tiny_folder, tmp_path / "model")
    (folder / "model.safetensors").unlink()
    torch.save({"w": torch.ones(64)}, folder / "pytorch_model.bin")
    data = (folder / "pytorch_model.bin").read_bytes()
    (folder / "pytorch_model.bin").write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFileError, match=r"pytorch_model.bin is damaged: truncated or broken torch zip archive"):
        interp.load(folder)


def test_config_of_unsupported_architecture(tmp_path, cache_root, tiny_folder):
    folder = copy_folder(tiny_folder, tmp_path / "model")
    config = json.loads((folder / "config.json").read_text())
    config.update(model_type="bert", architectures=["BertForMaskedLM"])
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelFileError) as err:
        interp.load(folder)
    message = one_line(err)
    assert message.startswith(
        f"{folder / 'config.json'} names architecture 'bert' (BertForMaskedLM), which is unsupported; "
        "supported families: gemma3, gpt2, gpt_neox, llama, mistral, qwen (config model_type one of "
    )
    del config["model_type"]
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelFileError, match=r"names no model_type \(unknown architecture\), which is unsupported"):
        interp.load(folder)
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize(
    "text, problem",
    [
        ('{"model_type": "llama",', r"not valid JSON \(Expecting property name enclosed in double quotes at line 1 column 24\)"),
        ("", r"not valid JSON \(Expecting value at line 1 column 1\)"),
        ("[1, 2]", "a JSON list, not an object"),
    ],
    ids=["cut-short", "empty", "a-list"],
)
def test_config_that_is_not_a_json_object(tmp_path, cache_root, tiny_folder, text, problem):
    folder = copy_folder(tiny_folder, tmp_path / "model")
    (folder / "config.json").write_text(text)
    with pytest.raises(ModelFileError, match=problem) as err:
        interp.load(folder)
    assert one_line(err).startswith(f"{folder / 'config.json'} is damaged: ")
    (folder / "config.json").write_bytes(b"\xff\xfe{}")
    with pytest.raises(ModelFileError, match=r"config.json is damaged: not UTF-8 text"):
        interp.load(folder)
    assert leftovers(tmp_path) == []


def test_folder_without_tokenizer(tmp_path, tiny_folder, monkeypatch):
    with pytest.raises(ModelFileError) as err:
        interp.load(tiny_folder)
    assert one_line(err) == (
        f"{tiny_folder} has no tokenizer files (tokenizer.json, tokenizer_config.json, tokenizer.model, "
        "vocab.json, vocab.txt, spiece.model); add the model's tokenizer files or pass tokenizer=..."
    )
    # With a tokenizer given, the same folder loads.
    assert interp.load(tiny_folder, tokenizer=word_tokenizer()).cfg.n_layers == 1
    # Tokenizer files that transformers cannot read still fail in one line naming the folder.
    folder = copy_folder(tiny_folder, tmp_path / "model")
    (folder / "tokenizer_config.json").write_text("{}")
    with pytest.raises(ModelFileError) as err:
        interp.load(folder)
    message = one_line(err)
    assert message.startswith(f"{folder} has no usable tokenizer (") and message.endswith("or pass tokenizer=...")


def test_single_file_of_a_folder(tiny_folder):
    with pytest.raises(ModelFileError, match=r"is one file of a model folder; pass the folder"):
        interp.load(tiny_folder / "model.safetensors")


# -- dtype -------------------------------------------------------------------------------------------------
def test_dtype_names_and_torch_dtypes():
    assert loading.DTYPES == {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    assert loading.check_dtype(None) is torch.float32
    assert loading.check_dtype("bfloat16") is torch.bfloat16
    assert loading.check_dtype(" Float16 ") is torch.float16
    assert loading.check_dtype("torch.float32") is torch.float32
    assert loading.check_dtype(torch.bfloat16) is torch.bfloat16


@pytest.mark.parametrize("bad", ["fp13", "int8", torch.int8, 16])
def test_unknown_dtype(bad):
    with pytest.raises(UnknownNameError) as err:
        loading.check_dtype(bad)
    assert one_line(err) == (
        f"unknown dtype {str(bad)!r}; valid dtypes: float32, bfloat16, float16. "
        "A torch dtype works too (torch.float32, torch.bfloat16, torch.float16)"
    )


def test_load_checks_dtype_and_device_before_reading_anything(monkeypatch, tmp_path):
    def resolve(*args, **kwargs):
        raise AssertionError("nothing should be read before the arguments are checked")

    monkeypatch.setattr(loading, "_resolve", resolve)
    with pytest.raises(UnknownNameError, match=r"^unknown dtype 'fp13'; valid dtypes: float32, bfloat16, float16"):
        interp.load("smollm2-135m", dtype="fp13")
    with pytest.raises(UnknownNameError, match=r"^unknown device 'gpu0'; valid devices: cpu, cuda, cuda:N, mps$"):
        interp.load(str(tmp_path), device="gpu0")


def test_dtype_by_name_loads(tiny_folder):
    model = interp.load(tiny_folder, tokenizer=word_tokenizer(), dtype="bfloat16", device="cpu")
    assert next(model.hf.parameters()).dtype == torch.bfloat16


# -- device ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("bad", ["gpu0", "gpu", "cuda0", "cuda:x", "cpu:0", "tpu", ""])
def test_unknown_device(bad):
    with pytest.raises(UnknownNameError) as err:
        loading.check_device(bad)
    assert one_line(err) == f"unknown device {bad!r}; valid devices: cpu, cuda, cuda:N, mps"


def test_device_forms(monkeypatch):
    assert loading.check_device(None) == torch.device("cpu")
    assert loading.check_device(" CPU ") == torch.device("cpu")
    assert loading.check_device(torch.device("cpu")) == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert loading.check_device("cuda") == torch.device("cuda")
    assert loading.check_device("cuda:1") == torch.device("cuda", 1)
    with pytest.raises(OutOfRangeError) as err:
        loading.check_device("cuda:2")
    assert one_line(err) == "cuda device 2 is out of range: valid cuda devices are 0..1"


@pytest.mark.parametrize("device", ["cuda", "cuda:0", torch.device("cuda", 1)])
def test_cuda_not_available(monkeypatch, device):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(DeviceUnavailableError) as err:
        interp.load("smollm2-135m", device=device)
    message = one_line(err)
    assert message.startswith(f"device {str(device)!r}: CUDA is not available here (torch ")
    assert message.endswith("use device='cpu'")


def test_mps_not_available(monkeypatch):
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(DeviceUnavailableError) as err:
        loading.check_device("mps")
    assert one_line(err) == "device 'mps': MPS (Apple GPU) is not available here; use device='cpu'"


# -- model=... ---------------------------------------------------------------------------------------------
def test_model_object_that_is_not_a_causal_lm():
    with pytest.raises(LoadArgumentError) as err:
        interp.load(model=torch.nn.Linear(2, 2), tokenizer=word_tokenizer())
    assert one_line(err) == (
        "load(model=...) got torch.nn.modules.linear.Linear, which is not a Hugging Face causal LM "
        "(a transformers model with a config); supported families: gemma3, gpt2, gpt_neox, llama, mistral, "
        "qwen (config model_type one of gemma3, gemma3_text, gpt2, gpt_neox, llama, mistral, qwen2, qwen3)"
    )
    assert isinstance(err.value, TypeError)


def test_model_object_of_unsupported_architecture():
    config = OPTConfig(vocab_size=16, hidden_size=16, num_hidden_layers=1, ffn_dim=32, num_attention_heads=2,
                       word_embed_proj_dim=16, max_position_embeddings=32)
    with pytest.raises(LoadArgumentError) as err:
        interp.load(model=OPTForCausalLM(config), tokenizer=word_tokenizer())
    assert one_line(err).startswith(
        "load(model=...) got OPTForCausalLM, of architecture 'opt', which is unsupported; supported families: gemma3,"
    )


def test_model_object_without_lm_head():
    with pytest.raises(LoadArgumentError) as err:
        interp.load(model=LlamaModel(tiny_config()), tokenizer=word_tokenizer())
    assert one_line(err) == (
        "load(model=...) got LlamaModel, a llama model without a language-model head; "
        "load it with transformers.AutoModelForCausalLM instead"
    )


def test_model_object_bad_device_and_tokenizer_path():
    hf = AutoModelForCausalLM.from_config(tiny_config())
    with pytest.raises(UnknownNameError, match="unknown device 'gpu0'"):
        interp.load(model=hf, tokenizer=word_tokenizer(), device="gpu0")
    with pytest.raises(LoadArgumentError, match=r"tokenizer='some/folder' is a name, not a tokenizer"):
        interp.load(model=hf, tokenizer="some/folder")
    model = interp.load(model=hf, tokenizer=word_tokenizer(), dtype="float16")
    assert next(model.hf.parameters()).dtype == torch.float16


# -- the cache keeps no lock files ---------------------------------------------------------------------------
def test_successful_gguf_load_leaves_no_lock(tmp_path, cache_root, monkeypatch, tiny_folder):
    def convert(gguf: Path, out: Path, label: str) -> None:
        for f in tiny_folder.iterdir():
            (out / f.name).write_bytes(f.read_bytes())

    monkeypatch.setattr(loading, "_convert_gguf", convert)
    gguf = write_gguf(tmp_path / "model.gguf")
    model = interp.load(gguf, tokenizer=word_tokenizer())
    assert model.name == "model"
    entries = sorted(p.name for p in (cache_root / "models").iterdir())
    assert len(entries) == 1 and entries[0].startswith("model-sha256-")
    assert [p for p in tmp_path.rglob("*") if p.name.endswith(".lock") or ".tmp-" in p.name] == []
    assert cache.check_entry(cache_root / "models" / entries[0]) is None
