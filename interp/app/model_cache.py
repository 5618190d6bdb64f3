"""Models load once per server process and are shared by every browser session.

Hooks are installed on the shared modules while a trace runs, so two sessions tracing the
same model at once would see each other's hooks: every use of a model goes through
``using(spec)``, which holds that model's lock.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from pathlib import Path

import streamlit as st

NO_MODEL = "(none: reports only)"


def installed_bundled() -> list[str]:
    """Bundled model names whose weight packages are installed here."""
    from interp.models.bundled import BUNDLED

    return [name for name, entry in BUNDLED.items() if entry.installed()]


def choices(extra: str | None) -> list[str]:
    """What the sidebar offers: no model, ``extra`` (the ``--model`` flag), installed bundled models."""
    names = [NO_MODEL]
    if extra:
        names.append(extra)
    names += [n for n in installed_bundled() if n != extra]
    return names


@st.cache_resource(show_spinner=False, max_entries=2)
def _load(spec: str):
    import interp

    return interp.load(spec)


@st.cache_resource(show_spinner=False)
def _lock(spec: str) -> threading.Lock:
    return threading.Lock()


def load(spec: str):
    """The ``interp.Model`` for ``spec``, loaded on first use (with a spinner) and cached."""
    label = Path(spec).name if "/" in spec else spec
    with st.spinner(f"Loading {label} (once per server process)…"):
        return _load(spec)


@contextlib.contextmanager
def using(spec: str) -> Iterator:
    """The model for ``spec``, held exclusively for the ``with`` block."""
    model = load(spec)
    with _lock(spec):
        yield model
