"""Errors that name the problem and what would be valid."""

from __future__ import annotations

from collections.abc import Iterable


class InterpError(Exception):
    """Base class of every error this toolkit raises on purpose."""


class UnknownNameError(InterpError, ValueError):
    """A name (model, site, score, ...) that is not one of the valid choices."""

    def __init__(self, kind: str, name: object, valid: Iterable[object], hint: str = ""):
        choices = ", ".join(str(v) for v in valid)
        message = f"unknown {kind} {name!r}; valid {kind}s: {choices}"
        super().__init__(message + (f". {hint}" if hint else ""))
        self.name, self.kind = name, kind


class OutOfRangeError(InterpError, IndexError):
    """A layer, head, neuron or position index outside the model."""

    def __init__(self, kind: str, index: object, size: int):
        super().__init__(f"{kind} {index} is out of range: valid {kind}s are 0..{size - 1}")


class PromptTooLongError(InterpError, ValueError):
    """Input longer than the model's context window."""


class MissingDependencyError(InterpError, ImportError):
    """An optional package is needed for this feature."""

    def __init__(self, package: str, feature: str, install: str | None = None):
        install = install or f"pip install {package}"
        super().__init__(f"{feature} needs the optional package {package!r}; install it with: {install}")


class OfflineError(InterpError, OSError):
    """A model must come from a hub that cannot be reached."""


def require(module: str, feature: str, install: str | None = None):
    """Import an optional dependency or raise ``MissingDependencyError``."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependencyError(module.split(".")[0], feature, install) from exc
