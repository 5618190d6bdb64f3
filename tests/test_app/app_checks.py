"""Assertions shared by the app tests."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from streamlit.testing.v1 import AppTest


def shown(markdown: str) -> str:
    """A message as the page shows it: without the backslashes ``ui.md`` escapes markdown with."""
    return re.sub(r"\\([\\`\[\]<>$])", r"\1", markdown)


def errors(at: AppTest) -> list[str]:
    """The error messages on the page, as shown."""
    return [shown(e.value) for e in at.error]


def no_trouble(at: AppTest) -> None:
    """No uncaught exception and no error message on the page."""
    assert not at.exception, [e.value for e in at.exception]
    assert not errors(at), errors(at)


def rendered_text(at: AppTest) -> str:
    """Everything the run sent to the page, sidebar included, as text: each element's message in
    protobuf text form (labels, options as shown, captions, messages, table and chart data)."""
    return "\n".join(str(node.proto) for node in at._tree if getattr(node, "proto", None) is not None)


def progress_reports(monkeypatch) -> list[tuple[str, int, int | None]]:
    """Every report that reaches the page's progress bar (``ui.progress_bar``), as it arrives:
    ``(desc, done, total)`` from the library's own loops (``interp.logs.on_progress``)."""
    from interp.app import ui

    seen: list[tuple[str, int, int | None]] = []
    real = ui.on_progress

    def recording(draw):
        return real(lambda desc, done, total: (seen.append((desc, done, total)), draw(desc, done, total)))

    monkeypatch.setattr(ui, "on_progress", recording)
    return seen
