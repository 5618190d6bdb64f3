"""The app tests need streamlit; without it they are skipped here, visibly, instead of failing."""

import pytest


def test_streamlit_is_installed():
    st = pytest.importorskip("streamlit", reason="the app and its tests need streamlit: pip install 'interp[app]'")
    assert hasattr(st, "navigation")
