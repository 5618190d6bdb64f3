"""Execute the tutorials (jupytext percent-format ``.py`` files) into notebooks with outputs.

One function serves the test suite (``tests/test_tutorials.py``) and the site (``docs/hooks.py``),
so a CI run executes each tutorial once: an executed notebook is kept under ``build/tutorials/``,
keyed by a hash of its source and of interp's source, and reused only while neither changed.

Each notebook runs in a fresh kernel whose working directory is an empty temporary folder and
whose ``sys.path`` has the repository root on it: a tutorial must not depend on the folder it is
started from, and a root-level module that shadows an installed package (the ``kernels`` trap)
fails it. A warning from interp (its category defined in interp, or raised from interp's code) or
any ``FutureWarning`` fails the run, as in the test suite's settings.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TUTORIALS = Path(__file__).resolve().parent
BUILD = ROOT / "build" / "tutorials"
TIMEOUT_S = 900  # one cell; a whole tutorial takes well under a minute on 2 cores

# Injected before the first cell and after the last, then removed from the saved notebook.
_SETUP = r'''
import warnings as _w, pathlib as _p
_w.simplefilter("default")
_w.filterwarnings("ignore", message="IProgress not found")  # tqdm without ipywidgets: bars stay text
_interp_dir = str(_p.Path(__import__("interp").__file__).parent)
_bad_warnings = []
_show = _w.showwarning
def _record(message, category, filename, lineno, file=None, line=None):
    ours = category.__module__.startswith("interp") or str(filename).startswith(_interp_dir)
    if ours or issubclass(category, FutureWarning):
        _bad_warnings.append(f"{category.__name__} at {filename}:{lineno}: {message}")
    _show(message, category, filename, lineno, file, line)
_w.showwarning = _record
'''
_CHECK = 'assert not _bad_warnings, "warnings from interp:\\n" + "\\n".join(_bad_warnings)'


def _plotly_js_once(nb) -> None:
    """Replace the inline plotly.js (about 5 MB, in the first figure's output) with a script tag
    for the one copy the site serves (``docs/hooks.py`` writes ``assets/plotly.min.js``); the
    figures that follow call the global ``Plotly``, which that tag defines before they run."""
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            html = output.get("data", {}).get("text/html", "")
            if "window.Plotly = Plotly" in html and "plotly.js v" in html:
                output["data"]["text/html"] = '<script src="../../assets/plotly.min.js"></script>'


def sources() -> list[Path]:
    """The tutorials, in reading order (``NN_name.py``)."""
    return sorted(p for p in TUTORIALS.glob("[0-9][0-9]_*.py"))


def _key(source: Path) -> str:
    h = hashlib.sha256(source.read_bytes())
    h.update(Path(__file__).read_bytes())
    for path in sorted((ROOT / "interp").rglob("*.py")):
        h.update(path.relative_to(ROOT).as_posix().encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def unexecuted(source: Path) -> Path:
    """``source`` as a notebook without outputs (``INTERP_DOCS_EXECUTE=0 mkdocs serve``)."""
    import jupytext

    out = BUILD.parent / "unexecuted" / "tutorials" / f"{source.stem}.ipynb"
    out.parent.mkdir(parents=True, exist_ok=True)
    jupytext.write(jupytext.read(source), out)
    return out


def executed(source: Path, *, reuse: bool = True) -> tuple[Path, float]:
    """Run ``source`` top to bottom; return the executed notebook's path and the seconds it took
    (those of the run that wrote it, when a current one is reused). Raises on any error or warning
    from interp (``nbclient.exceptions.CellExecutionError``)."""
    import jupytext
    import nbformat
    from nbclient import NotebookClient

    BUILD.mkdir(parents=True, exist_ok=True)
    out = BUILD / f"{source.stem}.ipynb"
    key = _key(source)
    if reuse and out.exists():
        meta = json.loads(out.read_text(encoding="utf-8"))["metadata"].get("interp", {})
        if meta.get("key") == key:
            return out, float(meta["seconds"])
    nb = jupytext.read(source)
    nb.cells.insert(0, nbformat.v4.new_code_cell(_SETUP))
    nb.cells.append(nbformat.v4.new_code_cell(_CHECK))
    env = dict(os.environ)
    # the repository root first on sys.path, as when Python starts in the clone
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    env["PLOTLY_RENDERER"] = "notebook"  # figures as HTML with plotly.js inline: they draw in the site, offline
    env.setdefault("HF_HUB_OFFLINE", "1")
    with tempfile.TemporaryDirectory(prefix="interp-tutorial-") as cwd:
        client = NotebookClient(nb, timeout=TIMEOUT_S, kernel_name="python3", resources={"metadata": {"path": cwd}})
        start = time.perf_counter()
        client.execute(env=env)
        seconds = time.perf_counter() - start
    nb.cells = nb.cells[1:-1]
    _plotly_js_once(nb)
    nb.metadata["interp"] = {"key": key, "seconds": round(seconds, 1)}
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    tmp = out.with_suffix(".tmp")
    nbformat.write(nb, tmp)
    tmp.replace(out)
    return out, seconds
