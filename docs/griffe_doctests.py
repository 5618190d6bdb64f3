"""A griffe extension for the site: the doctest examples of interp's docstrings (``>>>`` lines and
their output) become ``pycon`` code blocks, which Markdown would otherwise read as nested quotes.
The docstrings themselves stay plain doctests (pytest runs them)."""

from __future__ import annotations

import re
from typing import Any

import griffe

_SKIP = re.compile(r"\s*#\s*doctest:.*$")


def fence_doctests(text: str) -> str:
    """Wrap each run of lines that starts with ``>>>`` (until a blank line) in a fenced block."""
    out: list[str] = []
    block: list[str] = []
    for line in [*text.split("\n"), ""]:
        starts = line.lstrip().startswith(">>>")
        if block and not line.strip():
            indent = " " * (len(block[0]) - len(block[0].lstrip()))
            out += [f"{indent}```pycon", *block, f"{indent}```"]
            block = []
        if starts or block:
            block.append(_SKIP.sub("", line))
        else:
            out.append(line)
    return "\n".join(out[:-1])


class DoctestBlocks(griffe.Extension):
    def on_object(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        docstring = obj.docstring
        if docstring is not None and ">>>" in docstring.value and "Examples:" not in docstring.value:
            docstring.value = fence_doctests(docstring.value)

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        self.on_object(obj=pkg)  # the root package is not always passed to on_object
