"""Numbers in a page's URL (``?clamp=-25`` on the neurons page): a value that is no finite number
(``1e400`` overflows to infinity) is named in one warning and the page starts from the default."""

from __future__ import annotations

import pytest
from app_checks import no_trouble

DEFAULT_CLAMP = 10.0


@pytest.mark.parametrize("text", ["1e400", "-inf", "nan", "ten"])
def test_clamp_in_the_url_that_is_no_finite_number(app, reports_root, tiny_model, text):
    at = app("neurons", reports=reports_root, model=tiny_model, query={"clamp": text})
    no_trouble(at)
    warnings = [w.value for w in at.warning]
    assert any(f"clamp={text}" in w for w in warnings), warnings
    assert at.number_input(key="clamp_value").value == DEFAULT_CLAMP


def test_clamp_in_the_url_is_used(app, reports_root, tiny_model):
    at = app("neurons", reports=reports_root, model=tiny_model, query={"clamp": "-25"})
    no_trouble(at)
    assert at.number_input(key="clamp_value").value == -25.0
    assert not any("clamp=" in w.value for w in at.warning)
