"""Public-domain text that ships with the package, for natural-text prompts and tests."""

from __future__ import annotations

from importlib import resources

from interp.errors import UnknownNameError

# Lewis Carroll, Alice's Adventures in Wonderland (1865), all twelve chapters (about 39k tokens).
TEXTS = {"alice": "alice.txt"}


def text(name: str = "alice") -> str:
    """A shipped text by name.

    >>> text("alice")[:31]
    'CHAPTER I. Down the Rabbit-Hole'
    """

    if name not in TEXTS:
        raise UnknownNameError("text", name, sorted(TEXTS))
    return resources.files("interp").joinpath("data", TEXTS[name]).read_text(encoding="utf-8")
