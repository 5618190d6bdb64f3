"""Report discovery: writers' hidden files (a manifest, a lock) and hidden folders are passed over."""

from __future__ import annotations

import json

from report_fixtures import write_heads, write_knob

from interp.app.report_files import find_reports


def test_hidden_files_and_folders_are_not_reports(tmp_path):
    knob = write_knob(tmp_path / "knob" / "run")
    for hidden in (".interp-manifest.json", ".interp.lock"):
        (knob / hidden).write_text("{}")
    only_hidden = tmp_path / "writing"
    only_hidden.mkdir()
    (only_hidden / ".interp.lock").write_text("")
    (only_hidden / ".knob.json").write_text(json.dumps({"model": "x"}))
    write_heads(tmp_path / ".staging" / "heads")  # a hidden folder, as a writer's scratch space
    found = find_reports([tmp_path])
    assert [(r.kind, r.folder, r.label) for r in found] == [("knob", knob.resolve(), f"knob/run  ({tmp_path.name}/)")]


def test_hidden_files_leave_pages_alone(app, tmp_path):
    folder = write_knob(tmp_path / "knob" / "run")
    (folder / ".interp-manifest.json").write_text(json.dumps({"files": ["knob.json"]}))
    (folder / ".interp.lock").write_text("")
    at = app("knob", reports=tmp_path)
    assert not at.exception and not at.error
    assert at.selectbox(key="knob_report").options == [f"knob/run  ({tmp_path.name}/)"]
