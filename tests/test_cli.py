"""The command line on the real default model."""

from __future__ import annotations

import pytest

from interp.cli import main


@pytest.mark.real_model
def test_trace_prints_continuation_and_logit_lens(smollm2, capsys):
    assert main(["trace", "smollm2-135m", "The capital of France is", "--max-new-tokens", "3"]) == 0
    out = capsys.readouterr().out
    assert "Paris" in out
    assert "logit lens" in out and out.count("\n") > smollm2.cfg.n_layers


def test_unknown_model_is_a_clear_error(capsys):
    assert main(["trace", "no-such-model"]) == 2
    err = capsys.readouterr().err
    assert "no-such-model" in err and "smollm2-135m" in err
