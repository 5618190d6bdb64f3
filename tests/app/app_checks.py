"""Assertions shared by the app tests."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from streamlit.testing.v1 import AppTest


def errors(at: AppTest) -> list[str]:
    return [e.value for e in at.error]


def no_trouble(at: AppTest) -> None:
    """No uncaught exception and no error message on the page."""
    assert not at.exception, [e.value for e in at.exception]
    assert not errors(at), errors(at)
