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


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("interp 0.") and "torch" in out and "transformers" in out


def test_parsing_imports_nothing_heavy():
    """A bad argument is reported before torch or transformers load (the parser stays light)."""
    import subprocess
    import sys

    code = ("import sys\nfrom interp.cli import build_parser\nbuild_parser()\n"
            "print(sorted(m for m in ('torch', 'transformers', 'pandas') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_options_mean_one_thing_across_subcommands():
    """Shared options are spelled alike in every subcommand, and the renamed ones are gone."""
    from interp.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices
    options = {name: {o for a in p._actions for o in a.option_strings} for name, p in sub.items()}
    for name in ("heads", "neurons", "knob", "icl", "trace"):
        assert {"--device", "--dtype", "--debug"} <= options[name], name
    for name in ("heads", "neurons", "knob", "icl"):
        assert {"--out", "--force"} <= options[name], name
    everything = set().union(*options.values())
    assert not {"--new-tokens", "--k", "--ks", "--html-k"} & everything
    for p in sub.values():
        for a in p._actions:
            if a.option_strings and a.help is None and a.dest != "help":
                raise AssertionError(f"{p.prog} {a.option_strings} has no help")


@pytest.mark.parametrize("command, function", [("knob", "interp.probes.knob:knob"),
                                               ("icl", "interp.circuits.icl:icl_circuit")])
def test_cli_defaults_and_help_come_from_the_python_api(command, function):
    """Each option the CLI builds from an analysis function parses, with no flags given, to that
    function's own default, and its help is the docstring's description of the parameter."""
    import importlib
    import inspect

    from interp.cli import build_parser
    from interp.cli import options as o

    module, _, name = function.partition(":")
    fn = getattr(importlib.import_module(module), name)
    parser = build_parser()
    args = parser.parse_args([command, "some-model", "--out", "x"])
    given = o.arguments(args)
    assert len(given) >= 5
    signature = inspect.signature(fn).parameters
    for param, value in given.items():
        expected = signature[param].default
        assert (list(value) if isinstance(value, (list, tuple)) else value) == \
            (list(expected) if isinstance(expected, (list, tuple)) else expected), param
    sub = next(a for a in parser._actions if a.dest == "command").choices[command]
    helps = {a.dest: a.help for a in sub._actions}
    for param in given:
        assert helps[param].startswith(o.described(fn, param)), param
