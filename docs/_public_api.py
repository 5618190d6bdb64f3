"""The public names of interp, and which of them lack a docstring that documents them.

Public: ``interp.__all__`` and the ``__all__`` of each subpackage that declares one. A function
is documented when its docstring names every parameter (``*args``/``**kwargs`` aside) and, unless
it returns ``None``, says what it returns ("return" or "yield" in the text, or a ``Returns:``
section); a class when its docstring names every parameter of its constructor (for a dataclass,
its fields). Used by ``tests/test_docs.py`` and by ``docs/hooks.py``, so ``mkdocs build --strict``
fails on the same list.
"""

from __future__ import annotations

import importlib
import inspect
import re

PACKAGES = ("interp", "interp.heads", "interp.neurons", "interp.probes", "interp.circuits", "interp.kernels")


def public_objects() -> dict[str, object]:
    """``{"interp.heads.scan": <function>, ...}``: every public function and class."""
    found: dict[str, object] = {}
    for package in PACKAGES:
        module = importlib.import_module(package)
        for name in module.__all__:
            obj = getattr(module, name)
            if inspect.isfunction(obj) or inspect.isclass(obj):
                found[f"{package}.{name}"] = obj
    return found


def _parameters(obj: object) -> tuple[list[str], object]:
    try:
        sig = inspect.signature(obj)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return [], None
    skip = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    names = [p.name for p in sig.parameters.values() if p.name not in ("self", "cls") and p.kind not in skip]
    return names, sig.return_annotation


def problems(obj: object) -> list[str]:
    """What the docstring of ``obj`` misses (empty: documented)."""
    doc = inspect.getdoc(obj) or ""
    if not doc.strip():
        return ["no docstring"]
    out = []
    names, returns = _parameters(obj)
    missing = [n for n in names if not re.search(rf"(?<![\w.]){re.escape(n)}(?!\w)", doc)]
    if missing:
        out.append("arguments not described: " + ", ".join(missing))
    if inspect.isfunction(obj) and returns not in (None, "None", inspect.Signature.empty) \
            and not re.search(r"\b(return|returns|returned|yield|yields)\b", doc, re.I):
        out.append("no word on what it returns")
    return out


def undocumented() -> dict[str, list[str]]:
    """``{public name: what its docstring misses}`` for every public name that misses something."""
    report = {}
    for name, obj in public_objects().items():
        if issubclass(obj, Warning) if inspect.isclass(obj) else False:
            if inspect.getdoc(obj):
                continue
        found = problems(obj)
        if found:
            report[name] = found
    return report
