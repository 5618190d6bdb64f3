"""The versions a result depends on, recorded in every report and cache entry."""

from __future__ import annotations

from interp import __version__


def versions() -> dict[str, str]:
    """``{"interp": ..., "torch": ..., "transformers": ...}`` of this environment.

    >>> sorted(versions())
    ['interp', 'torch', 'transformers']
    """
    import torch
    import transformers


    return {"interp": str(__version__), "torch": str(torch.__version__), "transformers": str(transformers.__version__)}
