"""With no model installed, every page still works from its saved report and says what needs a model."""

from __future__ import annotations

import pytest
from app_checks import no_trouble

from interp.app import model_cache


@pytest.mark.parametrize("page", ["heads", "neurons", "knob"])
def test_pages_work_from_reports_alone(app, reports_root, monkeypatch, page):
    monkeypatch.setattr(model_cache, "installed_bundled", lambda: [])
    at = app(page, reports=reports_root)
    no_trouble(at)
    assert at.sidebar.selectbox(key="model").options == [model_cache.NO_MODEL]
    assert len(at.get("plotly_chart")) >= 1
    assert any("none is installed here" in i.value for i in at.info)


def test_circuits_needs_no_model(app, reports_root, monkeypatch):
    monkeypatch.setattr(model_cache, "installed_bundled", lambda: [])
    at = app("circuits", reports=reports_root)
    no_trouble(at)
    assert len(at.get("plotly_chart")) >= 4  # accuracy, the three steps, ablation, patching
