"""Output folders as a security boundary: the manifest, the checkpoint and interp's hidden names
are data anyone may edit or plant, so every way of turning them against the user is tried here.
Whatever the mutation, nothing outside the output folder is touched, and no file interp did not
write is replaced or deleted, with or without ``force``."""

from __future__ import annotations

import hashlib
import json
import logging
import os

import pytest
import torch
from wired_models import tiny_llama_folder

import interp
from interp.cli import main
from interp.heads.checkpoint import Checkpoint, fingerprint
from interp.models.fingerprint import weights_digest
from interp.results.folders import CHECKPOINT, LOCK, MANIFEST, STAMP, OutputError, output_folder

pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.raw_files]


def snapshot(root):
    """Every file under ``root`` with its bytes (links as their targets)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, root)
            out[rel] = ("link", os.readlink(path)) if os.path.islink(path) else open(path, "rb").read()
    return out


@pytest.fixture
def world(tmp_path):
    """An output folder ``out`` written once by interp (kind "heads"), beside a ``victim`` folder
    of the user's that no run may touch."""
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "thesis.txt").write_text("years of work")
    out = tmp_path / "out"
    with output_folder(out, kind="heads") as o:
        o.write_text("report.html", "<p>first</p>")
        o.write_text("scores.json", "[1]")
    return tmp_path, out, victim


def rewrite_manifest(out, edit):
    data = json.loads((out / MANIFEST).read_text())
    edit(data)
    (out / MANIFEST).write_text(json.dumps(data))


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@pytest.mark.parametrize("name", ["../victim/thesis.txt", "..", "/etc/passwd", "sub/x", "a\\b", "", "x\0y",
                                  ".interp.lock", ".interp-checkpoint"])
@pytest.mark.parametrize("force", [False, True])
def test_a_manifest_naming_anything_but_a_plain_file_inside_is_refused(world, name, force):
    tmp, out, victim = world
    before = snapshot(tmp)
    rewrite_manifest(out, lambda d: d["files"].update({name: {"kind": "heads", "sha256": sha("years of work")}}))
    before[os.path.join("out", MANIFEST)] = (out / MANIFEST).read_bytes()
    with pytest.raises(OutputError, match="not a manifest interp can trust") as err:
        with output_folder(out, kind="heads", force=force) as o:
            o.write_text("report.html", "<p>second</p>")
    assert "remove that file" in str(err.value)
    assert snapshot(tmp) == before


@pytest.mark.parametrize("mutation", [
    lambda d: d.update(files=["report.html", "scores.json"]),  # an older interp's bare list: no checksums
    lambda d: d.update(format=3),
    lambda d: d.update(written_by="someone"),
    lambda d: d["files"]["report.html"].update(sha256="0" * 63),
    lambda d: d["files"]["report.html"].update(kind="Heads; rm"),
    lambda d: d["files"].update({"x": "not a record"}),
])
def test_a_damaged_manifest_is_refused_not_half_trusted(world, mutation):
    tmp, out, victim = world
    rewrite_manifest(out, mutation)
    before = snapshot(tmp)
    with pytest.raises(OutputError, match="not a manifest interp can trust"):
        with output_folder(out, kind="heads"):
            pass
    assert snapshot(tmp) == before


def test_a_manifest_that_is_a_link_or_not_json_is_refused(world):
    tmp, out, victim = world
    (out / MANIFEST).unlink()
    (out / MANIFEST).symlink_to(victim / "thesis.txt")
    with pytest.raises(OutputError, match="a link or not a regular file"):
        output_folder(out).__enter__()
    (out / MANIFEST).unlink()
    (out / MANIFEST).write_text('{"written_by": "interp", "format": 2, "files": {}, "x": NaN}')
    with pytest.raises(OutputError, match="unreadable"):
        output_folder(out).__enter__()
    assert (victim / "thesis.txt").read_text() == "years of work"


def test_a_user_file_listed_in_the_manifest_is_never_deleted(world):
    # The user's file is listed under this kind with a checksum of other bytes: it is not interp's.
    tmp, out, victim = world
    (out / "notes.txt").write_text("mine")
    rewrite_manifest(out, lambda d: d["files"].update({"notes.txt": {"kind": "heads", "sha256": sha("other")}}))
    with pytest.raises(OutputError, match=r"files interp did not write \(notes.txt\)"):
        with output_folder(out, kind="heads"):
            pass
    with output_folder(out, kind="heads", force=True) as o:  # a rerun that no longer writes notes.txt
        o.write_text("report.html", "<p>second</p>")
    assert (out / "notes.txt").read_text() == "mine"
    assert not (out / "scores.json").exists()  # interp's own stale file went


def test_a_file_interp_wrote_then_the_user_edited_is_theirs(world):
    tmp, out, victim = world
    (out / "report.html").write_text("<p>my annotations</p>")
    with pytest.raises(OutputError, match=r"report.html"):
        with output_folder(out, kind="heads"):
            pass
    with pytest.raises(OutputError, match=r"refusing to replace .*report.html: interp did not write it"):
        with output_folder(out, kind="heads", force=True) as o:
            o.write_text("report.html", "<p>second</p>")
    assert (out / "report.html").read_text() == "<p>my annotations</p>"
    assert (out / "scores.json").read_text() == "[1]"  # nothing landed: all files or none


@pytest.mark.parametrize("name", ["report.html", "head_scores.json"])
def test_force_never_replaces_a_users_file_with_interps_name(tmp_path, name):
    out = tmp_path / "out"
    out.mkdir()
    (out / name).write_text("the user's own")
    with pytest.raises(OutputError, match=f"refusing to replace .*{name}"):
        with output_folder(out, kind="heads", force=True) as o:
            o.write_text(name, "interp's")
            o.write_text("other.json", "{}")
    assert (out / name).read_text() == "the user's own"
    assert sorted(p.name for p in out.iterdir()) == [name]


def test_reports_of_two_kinds_live_side_by_side_and_a_clash_is_refused(world):
    tmp, out, victim = world
    with output_folder(out, kind="neurons") as o:  # no force needed: every file there is interp's
        o.write_text("neurons.parquet", "n")
    with output_folder(out, kind="heads") as o:  # a rerun of the heads report drops nothing of neurons'
        o.write_text("report.html", "<p>second</p>")
    assert sorted(p.name for p in out.iterdir()) == [MANIFEST, "neurons.parquet", "report.html"]
    with pytest.raises(OutputError, match="belongs to the heads report"):
        with output_folder(out, kind="neurons") as o:
            o.write_text("report.html", "<p>neurons</p>")
    assert (out / "report.html").read_text() == "<p>second</p>"


def test_cli_neurons_then_heads_in_one_folder_keeps_both(tmp_path):
    model = tiny_llama_folder(tmp_path / "m", n_ctx=128)
    out = tmp_path / "out"
    assert main(["neurons", str(model), "--out", str(out), "--layers", "0", "--quiet"]) == 0
    neuron_files = sorted(p.name for p in out.iterdir())
    assert main(["heads", str(model), "--out", str(out), "--scores", "prev_token", "--lengths", "4", "--samples",
                 "2", "--no-causal-checks", "--quiet"]) == 0
    kept = sorted(p.name for p in out.iterdir())
    assert set(neuron_files) <= set(kept) and "head_scores.json" in kept


@pytest.mark.parametrize("name", [".interp-notes", ".interp-staging-mine", ".interp.lockfile", ".interpret"])
def test_a_users_hidden_file_with_interps_prefix_is_theirs(world, name):
    tmp, out, victim = world
    (out / name).write_text("mine")
    with pytest.raises(OutputError, match=name.replace(".", r"\.")):
        with output_folder(out, kind="heads"):
            pass
    with output_folder(out, kind="heads", force=True) as o:
        o.write_text("report.html", "x")
    assert (out / name).read_text() == "mine"


def test_a_lock_that_is_a_link_or_has_content_is_never_opened(world):
    tmp, out, victim = world
    (out / LOCK).symlink_to(victim / "thesis.txt")
    before = snapshot(victim)
    with pytest.raises(OutputError):
        with output_folder(out, kind="heads", force=True):
            pass
    assert snapshot(victim) == before
    (out / LOCK).unlink()
    (out / LOCK).write_text("my lock notes")
    with pytest.raises(OutputError, match="not a lock of interp's"):
        with output_folder(out, kind="heads", force=True):
            pass
    assert (out / LOCK).read_text() == "my lock notes"


def test_a_symlinked_checkpoint_is_refused_and_its_target_untouched(tmp_path):
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "data.json").write_text("[]")
    (victim / STAMP).write_text("{}")  # even a folder that looks like a checkpoint
    out = tmp_path / "out"
    out.mkdir()
    (out / CHECKPOINT).symlink_to(victim)
    before = snapshot(victim)
    with pytest.raises(OutputError, match="is a link"):
        Checkpoint(out / CHECKPOINT, {"model": "m"})
    with pytest.raises(OutputError):  # the output folder holding it counts it as the user's
        with output_folder(out, kind="heads"):
            pass
    assert snapshot(victim) == before


def test_a_checkpoint_with_a_users_file_is_not_cleared(tmp_path):
    folder = tmp_path / "ckpt"
    Checkpoint(folder, {"model": "a"}).put("u1", {"x": torch.ones(1)})
    (folder / "notes.txt").write_text("mine")
    Checkpoint(folder, {"model": "b"})  # another fingerprint: its units go, the user's file stays
    assert (folder / "notes.txt").read_text() == "mine"
    assert not (folder / "u1.safetensors").exists()


# -- resume fingerprint --------------------------------------------------------------------------
def test_weights_digest_sees_other_weights_and_in_place_edits():
    torch.manual_seed(0)
    a, b = torch.nn.Linear(3, 3), torch.nn.Linear(3, 3)
    first = weights_digest(a)
    assert weights_digest(a) == first != weights_digest(b)
    with torch.no_grad():
        a.weight[0, 0] += 1e-6  # in place: same tensor, new version
    assert weights_digest(a) != first
    edited = weights_digest(a)
    a.weight.data[1, 1] *= 2  # through .data: the parameter's version counter does not move
    assert weights_digest(a) != edited


def test_two_models_with_one_folder_name_never_share_a_checkpoint(tmp_path, caplog):
    one = interp.load(tiny_llama_folder(tmp_path / "a" / "model", n_ctx=128, seed=0))
    two = interp.load(tiny_llama_folder(tmp_path / "b" / "model", n_ctx=128, seed=1))
    assert one.name == two.name
    settings = {"scores": ["prev_token"], "lengths": [4], "samples": 2, "causal_checks": False, "progress": False}
    ckpt = tmp_path / "ckpt"
    interp.heads.scan(one, checkpoint=ckpt, **settings)
    assert json.loads((ckpt / STAMP).read_text())["weights"] == weights_digest(one.hf)
    with caplog.at_level(logging.WARNING, logger="interp"):
        resumed = interp.heads.scan(two, checkpoint=ckpt, **settings)
    assert "written with another weights" in caplog.text
    clean = interp.heads.scan(two, **settings)
    assert resumed.to_dict()["scores"] == clean.to_dict()["scores"]


@pytest.mark.parametrize("change", ["dtype", "settings", "interp"])
def test_the_fingerprint_names_what_the_numbers_depend_on(tmp_path, change):
    model = interp.load(tiny_llama_folder(tmp_path / "model", n_ctx=128))
    stamp = fingerprint(model, {"lengths": [4]})
    assert {"model", "weights", "dtype", "device", "interp", "settings"} <= set(stamp)
    other = dict(stamp)
    other[change] = "something else"
    folder = tmp_path / "ckpt"
    Checkpoint(folder, stamp).put("u", {"x": torch.ones(1)})
    assert Checkpoint(folder, stamp).get("u") is not None  # the same fingerprint resumes
    assert Checkpoint(folder, other).get("u") is None  # any difference starts afresh


def test_a_seed_beyond_the_generators_range_is_refused_before_any_checkpoint(tmp_path):
    model = interp.load(tiny_llama_folder(tmp_path / "model", n_ctx=128))
    for seed in (2**70, -1, 1.5, True):
        with pytest.raises(interp.errors.BadInputError, match="seed must be an integer"):
            interp.heads.scan(model, ["prev_token"], lengths=[4], samples=2, seed=seed, causal_checks=False,
                              checkpoint=tmp_path / "ckpt", progress=False)
    assert not (tmp_path / "ckpt").exists()


def test_sweep_revision_digests_every_weight_file(tmp_path):
    """A local model's revision is the sha256 of its weight files' bytes in name order: any edit to
    any of them changes it, and a model without weight files on disk is named by its source."""
    from types import SimpleNamespace

    from interp.heads.sweep import revision

    (tmp_path / "a.safetensors").write_bytes(b"first")
    (tmp_path / "b.safetensors").write_bytes(b"second")
    model = SimpleNamespace(source=str(tmp_path), hf=SimpleNamespace(config=SimpleNamespace()))
    first = revision(model)
    assert first == f"sha256 {hashlib.sha256(b'firstsecond').hexdigest()[:16]}"
    (tmp_path / "b.safetensors").write_bytes(b"Second")
    assert revision(model) != first
    assert revision(SimpleNamespace(source="smollm2-135m", hf=model.hf)) == "smollm2-135m"
