"""Model files checked for damage before anything heavy reads them: a Hugging Face folder's
``config.json`` (architecture, sizes), its safetensors headers against the bytes on disk and a
GGUF file's header, metadata and tensor table (a small reader of our own, so a damaged or crafted
file is a ``ModelFileError`` naming it, never a crash inside a library)."""

from __future__ import annotations

import json
import math
import mmap
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from interp.core.adapters import ADAPTERS, FAMILIES
from interp.errors import InterpError, ModelFileError, as_index, whole_number


def families() -> str:
    return f"{', '.join(FAMILIES)} (config model_type one of {', '.join(sorted(ADAPTERS))})"


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
        raise ModelFileError(f"{path} names {named}, which is unsupported; supported families: {families()}")
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
