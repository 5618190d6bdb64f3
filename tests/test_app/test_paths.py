"""Pages never show an absolute path of the machine."""

from __future__ import annotations

from pathlib import Path

import pytest
from app_checks import rendered_text
from report_fixtures import write_circuits, write_heads, write_knob, write_neurons

from interp.app.paths import display_path, display_text

PAGES = ["heads", "neurons", "knob", "circuits"]


def test_display_path_under_the_working_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert display_path(tmp_path / "reports" / "smollm2") == "reports/smollm2"
    assert display_path("reports/smollm2") == "reports/smollm2"  # relative paths stay as they are
    assert display_path(tmp_path) == "."
    assert display_path(str(tmp_path / "a" / "knob.json"), roots=[tmp_path / "a"]) == "a/knob.json"  # cwd first


def test_display_path_under_home_and_elsewhere(tmp_path, monkeypatch):
    home, elsewhere = tmp_path / "home" / "me", tmp_path / "data" / "runs"
    monkeypatch.setenv("HOME", str(home))
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")  # a working folder holding neither
    assert display_path(home / "reports" / "x") == "~/reports/x"
    assert display_path(home) == "~"
    assert display_path("~/reports") == "~/reports"
    assert display_path(elsewhere / "smollm2") == "smollm2"  # only the folder's name
    assert display_path(elsewhere / "smollm2" / "knob.json", roots=[elsewhere]) == "runs/smollm2/knob.json"
    assert display_path(elsewhere, roots=[elsewhere, elsewhere.parent]) == "runs"  # the deepest root


def test_display_text_rewrites_paths_in_messages(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    root = tmp_path.parent / f"{tmp_path.name}-reports"
    text = (f"cannot read {tmp_path}/reports/x/knob.json: bad; {root}/knob/y lacks 'layer'; "
            f"{tmp_path}-other/z; PosixPath('{root}'); in {tmp_path}. See /usr/lib/python3/thing.py; "
            f"blocks.3.hook_resid_post, 3/4 heads, https://example.org/a/b")
    out = display_text(text, roots=[root])
    assert out == (f"cannot read reports/x/knob.json: bad; {root.name}/knob/y lacks 'layer'; "
                   f"z; PosixPath('{root.name}'); in .. See thing.py; "
                   f"blocks.3.hook_resid_post, 3/4 heads, https://example.org/a/b")


def _reports_with_troubles(root: Path) -> Path:
    """Good reports, a broken one and one without its patching file, under ``root``."""
    write_heads(root / "heads" / "tiny-llama")
    write_neurons(root / "neurons" / "tiny-llama")
    write_circuits(root / "circuits" / "tiny-llama", patching=False)
    broken = write_knob(root / "knob" / "broken")
    (broken / "knob.json").write_text("{not json")
    return root


def _forbidden(*folders: Path) -> set[str]:
    out = set()
    for f in folders:
        out |= {str(f), str(f.resolve())}
    return out


@pytest.mark.parametrize("where", ["outside", "inside"])
def test_pages_show_no_absolute_path(app, tmp_path, tiny_model, monkeypatch, where):
    """Report folders outside the working folder show from their own name; inside it, relative to it.

    Every page, with good reports, a broken one, one lacking a file and none at all, and a model
    folder picked: no rendered text holds the absolute path of the test's folder or the working folder.
    """
    reports = _reports_with_troubles(tmp_path / "reports")
    empty = tmp_path / "nothing-here"
    empty.mkdir()
    if where == "inside":
        monkeypatch.chdir(tmp_path.parent)
    prefix = "" if where == "outside" else f"{tmp_path.name}/"
    forbidden = _forbidden(tmp_path, tiny_model, Path.cwd())
    for page in PAGES:
        for dirs in (reports, empty):
            at = app(page, reports=dirs, model=tiny_model)
            text = rendered_text(at)
            leaks = [f for f in forbidden if f in text]
            assert not leaks, (page, dirs.name, leaks)
            assert f"Reports from: `{prefix}{dirs.name}`" in text
            if page == "heads" and dirs == empty:
                assert any(f"No head_scores.json found under `{prefix}nothing-here`" in i.value for i in at.info)
            if page == "knob" and dirs == reports:
                assert any(f"cannot read {prefix}reports/knob/broken/knob.json" in e.value for e in at.error), \
                    [e.value for e in at.error]
            if page == "circuits" and dirs == reports:
                assert any(f"No patching.parquet in `{prefix}reports/circuits/tiny-llama`" in i.value for i in at.info)


def test_model_folder_shows_by_name(app, tmp_path, tiny_model):
    at = app("circuits", reports=tmp_path, model=tiny_model)
    shown = at.sidebar.selectbox(key="model").options
    assert tiny_model.name in shown and str(tiny_model) not in shown
