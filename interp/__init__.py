"""interp: mechanistic interpretability for open language models.

``import interp`` is cheap: the subpackages (``interp.heads``, ``interp.neurons``,
``interp.probes``, ``interp.circuits``, ``interp.kernels``, ``interp.app``, ...) and the
names below load on first use.

>>> import interp
>>> model = interp.load("smollm2-135m")                              # doctest: +SKIP
>>> with model.trace("The cat sat on the mat", sites="blocks.*.attn.hook_[qk]") as tr:
...     pass                                                          # doctest: +SKIP
>>> interp.attention_pattern(tr, layer=5, heads=[0], rows=[-1])       # doctest: +SKIP
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_NAMES = {"Model": "interp.core.model", "ModelConfig": "interp.core.model", "attention_pattern": "interp.core.patterns",
          "Trace": "interp.core.tracing", "act_name": "interp.core.sites", "load": "interp.models.loading",
          "interventions": "interp.core.interventions"}  # ``from interp import interventions as iv``: the edits users write
_SUBPACKAGES = ("heads", "neurons", "probes", "circuits", "kernels", "app")

if TYPE_CHECKING:
    from interp import (
        app,  # noqa: F401  (not in __all__: a star import must not need streamlit)
        circuits,
        heads,
        kernels,
        neurons,
        probes,
    )
    from interp.core import interventions
    from interp.core.model import Model, ModelConfig
    from interp.core.patterns import attention_pattern
    from interp.core.sites import act_name
    from interp.core.tracing import Trace
    from interp.models.loading import load


def __getattr__(name: str) -> Any:
    if name in _NAMES:
        module = importlib.import_module(_NAMES[name])
        value = module if module.__name__.endswith(f".{name}") else getattr(module, name)
    elif name in _SUBPACKAGES:
        value = importlib.import_module(f"interp.{name}")
    else:
        raise AttributeError(f"module 'interp' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_NAMES, *_SUBPACKAGES])


__all__ = ["Model", "ModelConfig", "Trace", "act_name", "attention_pattern", "circuits", "heads", "interventions", "kernels",
           "load", "neurons", "probes", "__version__"]
