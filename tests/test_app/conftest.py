"""Fixtures for the app tests: report folders, a tiny model folder, and AppTest on the real entry script."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

if importlib.util.find_spec("streamlit") is None:
    # Without streamlit only test_app_available.py runs, and it reports the skip.
    collect_ignore_glob = ["test_*_page.py", "test_cli_and_browser.py", "test_without_models.py", "test_paths.py",
                           "test_report_discovery.py", "test_crafted_reports.py"]
else:
    from streamlit.testing.v1 import AppTest

from report_fixtures import write_all, write_tiny_model  # noqa: E402

MAIN = Path(__file__).resolve().parents[2] / "interp" / "app" / "main.py"
TIMEOUT = 60  # seconds per script run; the first one imports torch and transformers


@pytest.fixture(scope="session")
def reports_root(tmp_path_factory) -> Path:
    return write_all(tmp_path_factory.mktemp("reports"))


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    return write_tiny_model(tmp_path_factory.mktemp("models") / "tiny-llama")


@pytest.fixture
def app(monkeypatch) -> Callable[..., AppTest]:
    """``app(page, reports=DIR, model=SPEC, query={...})``: the real app, run once on ``page``."""

    def make(page: str = "heads", reports: Path | None = None, model: Path | str | None = None,
             query: dict[str, str] | None = None) -> AppTest:
        monkeypatch.setenv("INTERP_APP_REPORTS", str(reports or Path("/nonexistent-reports")))
        if model is None:
            monkeypatch.delenv("INTERP_APP_MODEL", raising=False)
        else:
            monkeypatch.setenv("INTERP_APP_MODEL", str(model))
        at = AppTest.from_file(str(MAIN), default_timeout=TIMEOUT).run()
        if page != "heads":
            at.switch_page(f"views/{page}.py")
            at.query_params.update(query or {})  # as if the page's URL carried them
            at.run()
        return at

    return make
