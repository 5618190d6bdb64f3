"""A catalogue of bad and hostile inputs, across the command line and the Python API: each must
end in one clear line (``interp SUBCOMMAND: error: ...``, exit code 2; or an ``InterpError``
from the API) that names the problem, before any work, never a traceback.

``python tests/test_bad_inputs.py`` prints the catalogue as a markdown table of the messages.
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import math
import os
import socket
import struct
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from wired_models import tiny_llama_folder  # noqa: E402

import interp  # noqa: E402
from interp.cli import main  # noqa: E402
from interp.errors import InterpError  # noqa: E402


@dataclass(frozen=True)
class Case:
    label: str  # what a user typed or called
    expect: str  # a fragment the message must contain
    argv: tuple[str, ...] = ()  # a command line; {M} the tiny model folder, {T} a scratch folder, {P} a busy port
    call: Callable[[Env], object] | None = None  # or an API call

    @property
    def id(self) -> str:
        return self.label[:60]


@dataclass
class Env:
    folder: Path  # a tiny local Llama folder
    tmp: Path
    model: interp.Model
    scores: object = None  # a small HeadScores table of that model
    busy: socket.socket | None = None  # a socket listening on 127.0.0.1, so its port is in use


def cli(label: str, expect: str, *argv: str) -> Case:
    return Case(label, expect, argv=tuple(argv))


def api(label: str, expect: str, call: Callable[[Env], object]) -> Case:
    return Case(label, expect, call=call)


def _user_folder(env: Env) -> Path:
    folder = env.tmp / "thesis"
    folder.mkdir(exist_ok=True)
    (folder / "thesis.txt").write_text("draft")
    return folder


def _a_file(env: Env) -> Path:
    path = env.tmp / "notes.txt"
    path.write_text("keep me")
    return path


def _trace(env: Env, inputs, **kwargs):
    with env.model.trace(inputs, **kwargs):
        pass


def _pattern_from_positions(env: Env):
    with env.model.trace("the cat sat on", sites="blocks.1.attn.hook_[qk]", positions=[-1]) as tr:
        pass
    return interp.attention_pattern(tr, 1, heads=[0])


def _knockout_inside_trace(env: Env):
    from interp.circuits.knockout import knockout

    blocked = torch.zeros(1, 4, 4, dtype=torch.bool)
    with env.model.trace("the cat sat on"), knockout(env.model, blocked):
        pass


def _damaged_folder(env: Env, what: str) -> Path:
    import shutil

    folder = env.tmp / f"damaged-{what}"
    shutil.copytree(env.folder, folder, dirs_exist_ok=True)
    weights = folder / "model.safetensors"
    if what == "header":
        weights.write_bytes(struct.pack("<Q", 1 << 40) + b"{not json")
    elif what == "no-weights":
        weights.unlink()
    elif what == "arch":
        text = (folder / "config.json").read_text().replace('"llama"', '"frobnicator"')
        (folder / "config.json").write_text(text)
    elif what == "layers":
        config = json.loads((folder / "config.json").read_text())
        (folder / "config.json").write_text(json.dumps({**config, "num_hidden_layers": -1}))
    elif what == "offsets":  # a valid header whose first tensor's data_offsets cover half its shape's bytes
        raw = weights.read_bytes()
        (n,) = struct.unpack("<Q", raw[:8])
        header = json.loads(raw[8 : 8 + n])
        first = min((k for k in header if k != "__metadata__"), key=lambda k: header[k]["data_offsets"][0])
        begin, end = header[first]["data_offsets"]
        header[first]["data_offsets"] = [begin, begin + (end - begin) // 2]
        text = json.dumps(header, separators=(",", ":")).encode()
        weights.write_bytes(raw[:8] + text.ljust(n) + raw[8 + n :])
    return folder


def _cache_on_a_failing_disk(env: Env, code: int):
    """load(a .gguf file) into a fresh model cache whose disk fails as the OS would (EROFS: a
    read-only folder; ENOSPC: full while the converted model is written)."""
    from unittest import mock

    from interp.models import loading

    gguf = env.tmp.parent / "tiny.gguf"  # its header check is skipped: only the cache's disk matters here
    gguf.write_bytes(b"GGUF")

    def fail(path, *args, **kwargs):
        raise OSError(code, os.strerror(code), str(path))

    failing = (mock.patch("os.mkdir", fail) if code == errno.EROFS else
               mock.patch.object(loading, "_convert_gguf", lambda gguf, out, label: fail(out / "model.safetensors")))
    cache = {"INTERP_CACHE": str(env.tmp.parent / f"cache-{errno.errorcode[code]}")}
    with mock.patch.dict(os.environ, cache), mock.patch.object(loading, "check_gguf", lambda *a, **k: None), failing:
        interp.load(gguf)


def _short_gguf(env: Env) -> Path:
    path = env.tmp / "cut.gguf"
    path.write_bytes(b"GGUF" + struct.pack("<I", 3) + b"\x00" * 9)
    return path


M, T, P = "{M}", "{T}", "{P}"
NOT_UTF8 = b"r\xff".decode("utf-8", "surrogateescape")  # as Python decodes such bytes in a command line
SMALL = ("--lengths", "4", "--samples", "2", "--text-tokens", "32", "--text-samples", "2", "--window", "16",
         "--streaming-tokens", "48", "--quiet")

CASES = [
    # -- interp heads
    cli("heads: --out a folder holding a user's file", "holds files interp did not write (thesis.txt)",
        "heads", M, "--out", "{T}/thesis", *SMALL),
    cli("heads: --out an existing file", "is an existing file", "heads", M, "--out", "{T}/notes.txt", *SMALL),
    cli("heads: --out . in a folder of other files", "holds files interp did not write", "heads", M, "--out", ".",
        *SMALL),
    cli("heads: unknown score", "unknown score 'inductoin'", "heads", M, "--out", "{T}/r", "--scores", "inductoin"),
    cli("heads: empty score list", "expected comma-separated names", "heads", M, "--out", "{T}/r", "--scores", ","),
    cli("heads: --lengths 0", "must be an integer of at least 1, got 0", "heads", M, "--out", "{T}/r", "--lengths", "0"),
    cli("heads: --lengths abc", "expected an integer, got 'abc'", "heads", M, "--out", "{T}/r", "--lengths", "abc"),
    cli("heads: --samples -1", "argument --samples: must be an integer of at least 1", "heads", M, "--out", "{T}/r", "--samples",
        "-1"),
    cli("heads: --text-tokens 0", "argument --text-tokens: must be an integer of at least 1", "heads", M, "--out", "{T}/r",
        "--text-tokens", "0"),
    cli("heads: --text-tokens beyond the window", "context window of 256", "heads", M, "--out", "{T}/r",
        "--scores", "induction_text", "--text-tokens", "300"),
    cli("heads: a repeated length beyond the window", "context window is 256", "heads", M, "--out", "{T}/r",
        "--scores", "induction", "--lengths", "200"),
    cli("heads: --retrieval-lengths beyond the window", "exceed tiny-a's context window of 256", "heads", M, "--out",
        "{T}/r", "--scores", "retrieval", "--retrieval-lengths", "100000"),
    cli("heads: --retrieval-depths 1.5", "each value must be a number in 0..1, got 1.5", "heads", M, "--out", "{T}/r",
        "--retrieval-depths", "1.5"),
    cli("heads: --retrieval-depths nan", "must be finite, got nan", "heads", M, "--out", "{T}/r",
        "--retrieval-depths", "nan"),
    cli("heads: a streaming window covering the whole text", "cover every key of a 256-token text", "heads", M,
        "--out", "{T}/r", "--scores", "streaming"),
    cli("heads: --window 0", "argument --window: must be an integer of at least 1", "heads", M, "--out", "{T}/r", "--window", "0"),
    cli("heads: --export kv-pattern without retrieval", "add retrieval to --scores", "heads", M, "--out", "{T}/r",
        "--scores", "induction", "--export", "kv-pattern"),
    cli("heads: --mask-k 0", "argument --mask-k: must be an integer of at least 1", "heads", M, "--out", "{T}/r", "--mask-k", "0"),
    cli("heads: --mask-k above the pool", "allows mask_k 1..", "heads", M, "--out", "{T}/r", "--scores", "retrieval",
        "--retrieval-lengths", "100", "--mask-k", "500"),
    cli("heads: --device gpu0", "unknown device 'gpu0'", "heads", M, "--out", "{T}/r", "--device", "gpu0"),
    cli("heads: --device cuda without CUDA", "CUDA", "heads", M, "--out", "{T}/r", "--device", "cuda"),
    cli("heads: --dtype fp13", "unknown dtype 'fp13'", "heads", M, "--out", "{T}/r", "--dtype", "fp13"),
    cli("heads: an unknown model name", "unknown model 'no-such-model'", "heads", "no-such-model", "--out", "{T}/r"),
    cli("heads: a missing folder path", "no-such-folder", "heads", "./no-such-folder/", "--out", "{T}/r"),
    cli("heads: no --out", "the following arguments are required: --out", "heads", M),
    cli("heads: --out with bytes that are not UTF-8", "argument --out: '", "heads", M, "--out", "{T}/" + NOT_UTF8),
    cli("heads: --seed beyond 64 bits (before any checkpoint)", "argument --seed: must be an integer in 0..4294967295",
        "heads", M, "--out", "{T}/r", "--seed", str(2**64 + 1), *SMALL),
    cli("heads: --seed -1", "argument --seed: must be an integer in 0..4294967295", "heads", M, "--out", "{T}/r",
        "--seed", "-1"),
    # -- interp neurons
    cli("neurons: --top-tokens -5", "argument --top-tokens: must be an integer of at least 1, got -5", "neurons", M, "--out",
        "{T}/n", "--top-tokens", "-5"),
    cli("neurons: --weights foo", "unknown weight vector 'foo'", "neurons", M, "--out", "{T}/n", "--weights", "foo"),
    cli("neurons: nothing asked", "nothing to do", "neurons", M),
    cli("neurons: --clamp nan", "argument --clamp: must be finite, got nan", "neurons", M, "--find", "cat",
        "--clamp", "nan", "--prompt", "the"),
    cli("neurons: --clamp inf", "must be finite, got inf", "neurons", M, "--find", "cat", "--clamp", "inf",
        "--prompt", "the"),
    cli("neurons: --clamp without --prompt", "--clamp needs --find WORD", "neurons", M, "--find", "cat", "--clamp",
        "5"),
    cli("neurons: --neuron 99:99999 (checked before the search)", "layer 99 is out of range", "neurons", M, "--find",
        "cat", "--clamp", "5", "--prompt", "the", "--neuron", "99:99999"),
    cli("neurons: --neuron 0:99999", "neuron 99999 is out of range", "neurons", M, "--find", "cat", "--clamp", "5",
        "--prompt", "the", "--neuron", "0:99999"),
    cli("neurons: --neuron abc", "expected LAYER:NEURON", "neurons", M, "--find", "cat", "--neuron", "abc"),
    cli("neurons: --layers 7 on a 3-layer model", "layer 7 is out of range", "neurons", M, "--out", "{T}/n",
        "--layers", "7"),
    cli("neurons: --find with no words", "expected comma-separated words", "neurons", M, "--find", ","),
    cli("neurons: --prompt ''", "the prompt is empty", "neurons", M, "--find", "cat", "--clamp", "1", "--prompt", ""),
    cli("neurons: --out an existing file", "is an existing file", "neurons", M, "--out", "{T}/notes.txt"),
    # -- interp knob
    cli("knob: --items -5", "argument --items: must be an integer of at least 2, got -5", "knob", M, "--out", "{T}/k", "--items",
        "-5"),
    cli("knob: --items beyond the fact table", "the fact table gives at most", "knob", M, "--out", "{T}/k",
        "--items", "100000"),
    cli("knob: --threshold 2", "--threshold must lie in (0, 1]", "knob", M, "--out", "{T}/k", "--threshold", "2"),
    cli("knob: --threshold nan", "must be finite, got nan", "knob", M, "--out", "{T}/k", "--threshold",
        "nan"),
    cli("knob: --layer 99", "layer 99 is out of range", "knob", M, "--out", "{T}/k", "--layer", "99"),
    cli("knob: --das-steps 0", "argument --das-steps: must be an integer of at least 1", "knob", M, "--out", "{T}/k", "--das-steps",
        "0"),
    cli("knob: --out a folder holding a user's file", "thesis.txt", "knob", M, "--out", "{T}/thesis"),
    # -- interp icl
    cli("icl: --demo-counts -1", "argument --demo-counts: must be an integer of at least 0, got -1", "icl", M, "--out", "{T}/i",
        "--demo-counts", "-1"),
    cli("icl: --queries 0", "argument --queries: must be an integer of at least 1, got 0", "icl", M, "--out", "{T}/i", "--queries",
        "0"),
    cli("icl: --demos 0", "argument --demos: must be an integer of at least 1", "icl", M, "--out", "{T}/i", "--demos", "0"),
    cli("icl: --queries beyond the dataset", "items, but 5000 queries", "icl", M, "--out", "{T}/i", "--queries",
        "5000", "--no-summarize"),
    cli("icl: unknown dataset", "unknown ICL dataset 'sports'", "icl", M, "--out", "{T}/i", "--datasets", "sports"),
    cli("icl: a JSON file that is not a dataset", "is not a dataset file", "icl", M, "--out", "{T}/i", "--datasets",
        "{T}/bad.json", "--no-summarize"),
    cli("icl: --patching-pairs -1", "argument --patching-pairs: must be an integer of at least 0", "icl", M, "--out", "{T}/i",
        "--patching-pairs", "-1"),
    # -- interp trace, models, app, the parser
    cli("trace: an empty prompt", "the prompt is empty", "trace", M, ""),
    cli("trace: --max-new-tokens -5", "argument --max-new-tokens: must be an integer of at least 1, got -5", "trace", M, "Hi",
        "--max-new-tokens", "-5"),
    cli("trace: a prompt beyond the window", "context window of 256", "trace", M, "the " * 300),
    cli("trace: a prompt with bytes that are not UTF-8", "argument prompt: 'r\\udcff' holds bytes that are not valid "
        "UTF-8 (byte 0xff at character 1); it must be UTF-8 text", "trace", M, NOT_UTF8),
    cli("neurons: --find with bytes that are not UTF-8", "argument --find: ", "neurons", M, "--find", NOT_UTF8),
    cli("trace: --device gpu0", "unknown device 'gpu0'", "trace", M, "Hi", "--device", "gpu0"),
    cli("models: --prepare an unknown model", "no-such-model", "models", "--prepare", "no-such-model"),
    cli("app: --port 0", "--port 0 is not a port number", "app", "--port", "0"),
    cli("app: --reports a missing folder", "no such folder", "app", "--reports", "{T}/missing"),
    cli("app: --model an unknown name", "unknown model 'no-such-model'", "app", "--model", "no-such-model"),
    cli("app: a busy port (checked before the server starts)", "is already in use (by another interp app or another "
        "server); choose a free port with --port N", "app", "--reports", T, "--port", P),
    cli("an unknown subcommand", "invalid choice: 'frobnicate'", "frobnicate"),
    cli("no subcommand", "the following arguments are required: command"),
    # -- the Python API
    api("load(dtype='fp13')", "unknown dtype 'fp13'", lambda e: interp.load(e.folder, dtype="fp13")),
    api("load(device='gpu0')", "unknown device 'gpu0'", lambda e: interp.load(e.folder, device="gpu0")),
    api("load(model=nn.Linear(2, 2))", "Linear", lambda e: interp.load(model=torch.nn.Linear(2, 2),
                                                                        tokenizer=e.model.tokenizer)),
    api("load('no-such-model')", "unknown model 'no-such-model'", lambda e: interp.load("no-such-model")),
    api("load(a folder without weights)", "weights",
        lambda e: interp.load(_damaged_folder(e, "no-weights"))),
    api("load(a safetensors file with a broken header)", "model.safetensors",
        lambda e: interp.load(_damaged_folder(e, "header"))),
    api("load(a config of an unsupported architecture)", "frobnicator",
        lambda e: interp.load(_damaged_folder(e, "arch"))),
    api("load(a GGUF file cut short)", "cut.gguf", lambda e: interp.load(_short_gguf(e))),
    api("load(safetensors data_offsets that disagree with the shapes)", "has data_offsets [0, 16384], 16384 bytes, "
        "but its shape [128, 64] of F32 needs 32768 bytes", lambda e: interp.load(_damaged_folder(e, "offsets"))),
    api("load(config.json with num_hidden_layers: -1)", "num_hidden_layers must be an integer of at least 1, got -1",
        lambda e: interp.load(_damaged_folder(e, "layers"))),
    api("load(.gguf) with a read-only model cache", "cannot be written (Read-only file system",
        lambda e: _cache_on_a_failing_disk(e, errno.EROFS)),
    api("load(.gguf) with the model cache's disk full", "is full (No space left on device)",
        lambda e: _cache_on_a_failing_disk(e, errno.ENOSPC)),
    api("trace(12345)", "int", lambda e: _trace(e, 12345)),
    api("trace('')", "empty", lambda e: _trace(e, "")),
    api("trace('a\\ud800b'), a lone surrogate", "the prompt 'a\\ud800b' holds a lone surrogate '\\ud800' at character 1",
        lambda e: _trace(e, "a\ud800b")),
    api("generate(['the cat', 'a\\ud800b'])", "prompt 1 of 2 'a\\ud800b' holds a lone surrogate",
        lambda e: e.model.generate(["the cat", "a\ud800b"])),
    api("trace(['the cat', ''])", "empty", lambda e: _trace(e, ["the cat", ""])),
    api("trace(positions=[100]) on 4 tokens", "position 100", lambda e: _trace(e, "the cat sat on", positions=[100],
                                                                              sites="blocks.0.hook_resid_post")),
    api("trace(sites='blocks.9.hook_z') on 3 layers", "9", lambda e: _trace(e, "the cat", sites="blocks.9.hook_z")),
    api("trace(sites='blocks.0.hook_nothing')", "hook_nothing", lambda e: _trace(e, "the cat",
                                                                                sites="blocks.0.hook_nothing")),
    api("generate('')", "empty", lambda e: e.model.generate("")),
    api("generate(['the cat', ''])", "empty", lambda e: e.model.generate(["the cat", ""])),
    api("generate(max_new_tokens past the window)", "context window of 256",
        lambda e: e.model.generate("the cat", max_new_tokens=1000)),
    api("add(torch.ones(100)) at a d_model=64 site", "64",
        lambda e: _trace(e, "the cat", interventions={"blocks.0.hook_resid_post": interp.core.interventions.add(
            torch.ones(100))})),
    api("set_value(nan)", "finite", lambda e: interp.core.interventions.set_value(math.nan)),
    api("zero(heads=[7]) on 4 heads", "7", lambda e: _trace(e, "the cat", interventions={
        "blocks.0.attn.hook_z": interp.core.interventions.zero(heads=[7])})),
    api("attention_pattern of a trace kept at one position", "positions",
        lambda e: _pattern_from_positions(e)),
    api("attention_pattern(layer=9) on 3 layers", "layer 9 is out of range", lambda e: _pattern_layer(e)),
    api("attention_pattern(tr, True)", "layer must be an integer in 0..2, got bool True",
        lambda e: _pattern_layer(e, True)),
    api("attention_pattern(tr, 0, heads=6.0)", "head must be an integer in 0..3 (or -4..-1, counting from the end), "
        "got float 6.0", lambda e: _pattern_layer(e, 0, heads=6.0)),
    api("knockout(heads=6.0)", "head must be an integer in 0..3, got float 6.0", lambda e: _knockout_heads(e, 6.0)),
    api("knockout opened inside a trace that already ran", "knockout", _knockout_inside_trace),
    api("logit_diff(' the cat', ' sat') with a two-token answer", "token",
        lambda e: _logit_diff(e, " the cat", " sat")),
    api("scan(['inductoin'])", "unknown score 'inductoin'", lambda e: interp.heads.scan(e.model, ["inductoin"])),
    api("scan(lengths=(0,))", "at least 1", lambda e: interp.heads.scan(e.model, ["induction"], lengths=(0,))),
    api("scan(checkpoint=a file)", "is an existing file", lambda e: interp.heads.scan(
        e.model, ["prev_token"], lengths=(4,), samples=2, causal_checks=False, progress=False,
        checkpoint=str(_a_file(e)))),
    api("collect(out=a file)", "is an existing file", lambda e: interp.probes.collect(
        e.model, ["the cat"], out=_a_file(e), progress=False)),
    api("HeadScores.save(a folder holding a user's file)", "thesis.txt", lambda e: _scores(e).save(_user_folder(e))),
    api("HeadScores.top('nope')", "unknown score 'nope'", lambda e: _scores(e).top("nope")),
    api("neurons.clamp_effect(value=nan)", "finite", lambda e: interp.neurons.clamp_effect(e.model, 0, 0, math.nan, "the", "cat")),
    api("probes.steer(direction of width 10) at d_model=64", "64", lambda e: _steer_wrong_width(e)),
]


def _pattern_layer(env: Env, layer: object = 9, **kwargs):
    with env.model.trace("the cat", sites="blocks.0.attn.hook_[qk]") as tr:
        pass
    return interp.attention_pattern(tr, layer, **kwargs)  # type: ignore[arg-type]


def _knockout_heads(env: Env, heads: object):
    from interp.circuits.knockout import knockout

    with knockout(env.model, torch.zeros(1, 2, 2, dtype=torch.bool), heads=heads):  # type: ignore[arg-type]
        pass


def _logit_diff(env: Env, a: str, b: str):
    from interp.circuits import activation_patching, logit_diff

    return activation_patching(env.model, "the cat sat", "the dog sat", logit_diff(a, b), sites=["resid_pre"])


def _steer_wrong_width(env: Env):
    from interp.probes import steer

    with env.model.trace("the cat", interventions={"blocks.0.hook_resid_post": steer(torch.randn(10), value=1.0)}):
        pass


def _scores(env: Env):
    return env.scores


def make_env(root: Path) -> Env:
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    folder = tiny_llama_folder(root / "tiny-a", n_ctx=256, seed=0)
    scratch = root / "scratch"
    scratch.mkdir()
    (scratch / "bad.json").write_text('{"labels": ["a"]}')
    model = interp.load(folder)
    scores = interp.heads.scan(model, ["prev_token"], lengths=(4,), samples=2, causal_checks=False, progress=False)
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    env = Env(folder, scratch, model, scores, busy)
    _a_file(env)
    _user_folder(env)
    return env


def run_case(case: Case, env: Env) -> tuple[int | None, str]:
    """(exit code or None for the API, the message a user sees)."""
    if case.call is not None:
        try:
            case.call(env)
        except InterpError as exc:
            return None, str(exc)
        except Exception as exc:  # reported, and the test fails on it
            return None, f"NOT AN InterpError: {type(exc).__name__}: {exc}"
        return None, "NO ERROR RAISED"
    port = str(env.busy.getsockname()[1]) if env.busy else "8501"
    argv = [a.replace(M, str(env.folder)).replace(T, str(env.tmp)).replace(P, port) for a in case.argv]
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = main(argv)
        except SystemExit as exc:
            code = int(exc.code or 0)
    return code, err.getvalue()


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    return make_env(tmp_path_factory.mktemp("bad-inputs"))


def test_the_catalogue_is_large():
    assert len(CASES) >= 60 and len({c.label for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_gives_one_clear_line(case, env, monkeypatch, one_thread):
    monkeypatch.chdir(env.tmp)  # `--out .` meets the scratch folder's files
    from interp.heads import units

    monkeypatch.setattr(units, "score_pattern_unit", lambda *a, **k: pytest.fail("work started before the error"))
    monkeypatch.setattr(subprocess, "Popen", lambda *a, **k: pytest.fail("a process started before the error"))
    before = sorted(p.name for p in env.tmp.iterdir())
    code, message = run_case(case, env)
    assert "Traceback" not in message and "NOT AN InterpError" not in message and "NO ERROR" not in message, message
    assert case.expect in message, message
    if case.call is None:
        lines = message.strip().splitlines()
        assert code == 2 and len(lines) == 1, message
        assert lines[0].startswith("interp"), message
        assert ": error: " in lines[0]
    made_by_the_case = ("damaged-", "cut.gguf")  # the broken model files some cases build first
    after = sorted(p.name for p in env.tmp.iterdir())
    assert [n for n in after if not n.startswith(made_by_the_case)] == [
        n for n in before if not n.startswith(made_by_the_case)], "bad input left files behind"


if __name__ == "__main__":  # the catalogue as a markdown table
    import tempfile

    environment = make_env(Path(tempfile.mkdtemp()))
    os.chdir(environment.tmp)
    print("| # | input | exit | message |\n|---|---|---|---|")
    for i, case in enumerate(CASES, 1):
        code, message = run_case(case, environment)
        text = " ".join(message.split()).replace(str(environment.tmp), "T").replace(str(environment.folder), "M")
        text = text.replace(str(environment.tmp.parent), "T/..")
        print(f"| {i} | {case.label.replace('|', '/')} | {'-' if code is None else code} | {text.replace('|', '/')} |")
