"""Models from the neighbours: TransformerLens ``TransformerBridge`` and nnsight ``LanguageModel``.

``interp.load(bridge)`` and ``interp.load(language_model)`` wrap the Hugging Face model inside
either one, with its tokenizer, as an ``interp.Model``: the same weights, no copy.
``model.to_nnsight()`` goes the other way: an nnsight ``LanguageModel`` over the very modules
of an ``interp.Model``, so nnsight interventions and our analyses can be mixed.

Both packages are optional (``pip install 'interp[nnsight]'``, ``pip install 'interp[bench]'``);
nothing here imports them until they are used.

>>> import interp
>>> from nnsight import LanguageModel                                     # doctest: +SKIP
>>> lm = LanguageModel("HuggingFaceTB/SmolLM2-135M")                     # doctest: +SKIP
>>> model = interp.load(lm)                                              # doctest: +SKIP
>>> model.hf is lm._module                                               # doctest: +SKIP
True
>>> back = model.to_nnsight()                                            # doctest: +SKIP
>>> with back.trace("The cat sat"):                                      # doctest: +SKIP
...     resid = back.model.layers[0].output.save()   # = blocks.0.hook_resid_post of model.trace
"""

from __future__ import annotations

import copy
import warnings
from typing import Any

import torch

from interp.core.attention import untag
from interp.errors import MissingDependencyError

NNSIGHT_EXTRA = "pip install 'interp[nnsight]'  (or: pip install nnsight)"
TRANSFORMERLENS_EXTRA = "pip install 'interp[bench]'  (or: pip install transformer-lens)"


def _package_of(obj: Any) -> str | None:
    """``"nnsight"`` or ``"transformer_lens"`` when ``obj``'s class (or a base) comes from one."""
    for cls in type(obj).__mro__:
        root = cls.__module__.split(".", 1)[0]
        if root in ("nnsight", "transformer_lens"):
            return root
    return None


def is_neighbour(obj: Any) -> bool:
    """Whether ``obj`` is an nnsight model or a TransformerLens bridge (checked without importing them).

    >>> is_neighbour("smollm2-135m"), is_neighbour(object())
    (False, False)
    """
    return _package_of(obj) is not None


def _nnsight_module(lm: Any) -> Any:
    """The PyTorch model an nnsight model wraps (``_module`` from nnsight 0.5 on, ``_model`` before)."""
    for attr in ("_module", "_model"):
        try:
            inner = object.__getattribute__(lm, attr)
        except AttributeError:
            continue
        if isinstance(inner, torch.nn.Module):
            return inner
    raise TypeError(f"{type(lm).__name__} holds no PyTorch model (looked for _module and _model)")


def _is_bridge_component(module: torch.nn.Module) -> bool:
    return "_original_component" in module._modules


def _unbridged(module: torch.nn.Module) -> torch.nn.Module:
    """The Hugging Face module tree inside a bridge-wrapped one.

    A ``TransformerBridge`` replaces the submodules of the model it wraps, in place, by its own
    components, each holding the original under ``_original_component``. This gives the tree
    with every such component replaced by its original: leaves (linears, embeddings, norms) are
    the very same modules; a container with a replaced child becomes a shallow copy with its own
    child and hook tables and the same parameters and buffers. No weight is copied.
    """
    while _is_bridge_component(module):
        module = module._modules["_original_component"]  # type: ignore[assignment]
    children = {k: (None if v is None else _unbridged(v)) for k, v in module._modules.items()}
    if all(children[k] is v for k, v in module._modules.items()):
        return module
    shell = copy.copy(module)
    shell._modules = children  # type: ignore[assignment]
    shell._parameters = dict(module._parameters)  # type: ignore[assignment]
    shell._buffers = dict(module._buffers)  # type: ignore[assignment]
    for table in ("_forward_hooks", "_forward_hooks_with_kwargs", "_forward_hooks_always_called",
                  "_forward_pre_hooks", "_forward_pre_hooks_with_kwargs", "_backward_hooks", "_backward_pre_hooks"):
        if table in shell.__dict__:
            setattr(shell, table, type(getattr(module, table))())
    untag(shell)  # a copy shares the original's hook lists: interp.load tags it anew
    return shell


def unwrap(obj: Any) -> tuple[Any, Any, str]:
    """``(hf_model, tokenizer, name)`` inside an nnsight model or a TransformerLens bridge.

    Raises ``TypeError`` for objects of those packages that hold no Hugging Face model.
    """
    package = _package_of(obj)
    if package == "nnsight":
        hf = _nnsight_module(obj)
        tokenizer = getattr(obj, "tokenizer", None)
        return hf, tokenizer, _name(hf, "nnsight")
    if package == "transformer_lens":
        inner = getattr(obj, "original_model", None)
        if not isinstance(inner, torch.nn.Module):
            raise TypeError(
                f"{type(obj).__name__} is not a TransformerBridge over a Hugging Face model (no original_model); "
                "a HookedTransformer holds TransformerLens's own weights: boot a "
                "transformer_lens.model_bridge.TransformerBridge instead, or load the model by name"
            )
        return _unbridged(inner), getattr(obj, "tokenizer", None), _name(inner, "transformer_lens")
    raise TypeError(f"{type(obj).__name__} is neither an nnsight model nor a TransformerLens bridge")


def _name(hf: Any, via: str) -> str:
    config = getattr(hf, "config", None)
    return str(getattr(config, "_name_or_path", None) or type(hf).__name__) + f" (via {via})"


def to_nnsight(hf_model: torch.nn.Module, tokenizer: Any, **kwargs: Any) -> Any:
    """An nnsight ``LanguageModel`` over ``hf_model`` itself (same modules, same weights).

    ``kwargs`` go to ``LanguageModel``. nnsight 0.8 marks ``LanguageModel`` deprecated in favour of
    ``TransformersModel``; the class is the same kind of object, and the warning is not repeated here.
    """
    try:
        from nnsight import LanguageModel  # type: ignore[import-untyped,unused-ignore]
    except ImportError as exc:
        raise MissingDependencyError("nnsight", "model.to_nnsight()", NNSIGHT_EXTRA) from exc
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*LanguageModel is deprecated")
        return LanguageModel(hf_model, tokenizer=tokenizer, **kwargs)


__all__ = ["NNSIGHT_EXTRA", "TRANSFORMERLENS_EXTRA", "is_neighbour", "to_nnsight", "unwrap"]
