"""The versions a result depends on, recorded in every report and cache entry."""

from __future__ import annotations


def versions() -> dict[str, str]:
    """``{"interp": ..., "torch": ..., "transformers": ...}`` of this environment.

    >>> sorted(versions())
    ['interp', 'torch', 'transformers']
    """
    import torch
    import transformers

    from interp import __version__

    return {"interp": __version__, "torch": torch.__version__, "transformers": transformers.__version__}
