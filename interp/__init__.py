"""interp: mechanistic interpretability for open language models.

>>> import interp
>>> model = interp.load("smollm2-135m")                              # doctest: +SKIP
>>> with model.trace("The cat sat on the mat", sites="blocks.*.attn.hook_[qk]") as tr:
...     pass                                                          # doctest: +SKIP
>>> interp.attention_pattern(tr, layer=5, heads=[0], rows=[-1])       # doctest: +SKIP
"""

from interp import heads, interventions, neurons
from interp.model import Model, ModelConfig
from interp.patterns import attention_pattern
from interp.tracing import Trace

__version__ = "0.1.0"


def load(*args, **kwargs) -> Model:
    """Load a model; see ``interp.loading.load`` for every kind of spec."""
    from interp.loading import load as _load

    return _load(*args, **kwargs)


__all__ = ["Model", "ModelConfig", "Trace", "attention_pattern", "heads", "interventions", "load", "neurons", "__version__"]
